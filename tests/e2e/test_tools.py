"""OpenAI tool calling through the official SDK: forced calls, streaming, history, errors.

``tool_choice`` required or a named function is enforced by constrained decoding,
so even the random tiny model returns a call whose arguments fit the schema. The
schemas use enums and bounded integers so that generation ends well within
``max_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error, openai_client
from tests.fixtures.tools import WEATHER_PARAMS

ADD_PARAMS = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["a", "b"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER_PARAMS,
        },
    },
    {"type": "function", "function": {"name": "add", "parameters": ADD_PARAMS}},
]
SCHEMAS = {"get_weather": WEATHER_PARAMS, "add": ADD_PARAMS}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
AGENT_ARGS = (
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "hermes",
    "--reasoning-parser",
    "qwen3",
)


@pytest.fixture(scope="module")
def client(tiny_server: str) -> Iterator[Any]:
    with openai_client(tiny_server) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def agent_server(launch_server: LaunchServer) -> str:
    return launch_server(*AGENT_ARGS).base_url


def chat(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "default")
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 96)
    return client.chat.completions.create(**kwargs)


def the_call(response: Any) -> Any:
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1, choice.message
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return call


# -- forced calls ---------------------------------------------------------------------


def test_named_tool_choice(client: Any) -> None:
    response = chat(client, tools=TOOLS, tool_choice=NAMED)
    call = the_call(response)
    assert call.function.name == "get_weather"
    assert not response.choices[0].message.content


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_named_tool_choice_sampled(client: Any, seed: int) -> None:
    response = chat(client, tools=TOOLS, tool_choice=NAMED, temperature=1.0, seed=seed)
    assert the_call(response).function.name == "get_weather"


@pytest.mark.parametrize("seed", [None, 4, 5])
def test_required_tool_choice(client: Any, seed: int | None) -> None:
    temperature = 0.0 if seed is None else 1.0
    response = chat(client, tools=TOOLS, tool_choice="required", seed=seed, temperature=temperature)
    assert the_call(response).function.name in SCHEMAS


def test_forced_call_for_the_second_tool(client: Any) -> None:
    named = {"type": "function", "function": {"name": "add"}}
    assert the_call(chat(client, tools=TOOLS, tool_choice=named)).function.name == "add"


def test_forced_call_cut_short_is_text_with_length(client: Any) -> None:
    choice = chat(client, tools=TOOLS, tool_choice=NAMED, max_tokens=3).choices[0]
    assert choice.finish_reason == "length"
    assert not choice.message.tool_calls
    assert choice.message.content and choice.message.content.startswith("{")


def test_streamed_tool_call_reassembles_to_the_non_stream_call(client: Any) -> None:
    expected = the_call(chat(client, tools=TOOLS, tool_choice=NAMED))
    chunks = list(chat(client, tools=TOOLS, tool_choice=NAMED, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas, "no tool-call deltas streamed"
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.id.startswith("call_")
    assert first.type == "function" and first.function.name == "get_weather"
    for delta in rest:  # later fragments carry only arguments
        assert delta.index == 0 and delta.id is None and delta.function.name is None
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == json.loads(expected.function.arguments)
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert reasons == ["tool_calls"]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_tool_messages_in_history(client: Any) -> None:
    call = the_call(chat(client, tools=TOOLS, tool_choice=NAMED))
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 22C"},
    ]
    response = chat(client, messages=history, max_tokens=8)
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason == "length"
    assert response.usage.prompt_tokens > chat(client, max_tokens=1).usage.prompt_tokens
    # And a second forced call after the tool result.
    again = chat(client, messages=history, tools=TOOLS, tool_choice="required")
    assert the_call(again).function.name in SCHEMAS


def test_tool_choice_none_is_plain_text(client: Any) -> None:
    plain = chat(client, max_tokens=8).choices[0].message.content
    choice = chat(client, tools=TOOLS, tool_choice="none", max_tokens=8).choices[0]
    assert choice.finish_reason == "length" and not choice.message.tool_calls
    assert choice.message.content == plain  # the tiny ChatML template ignores tools


# -- refusals -------------------------------------------------------------------------


def post(http: httpx.Client, **fields: Any) -> httpx.Response:
    body = {"model": "default", "messages": ASK, "max_tokens": 4, **fields}
    return http.post("/v1/chat/completions", json=body)


def test_tools_without_parser_are_shown_and_answered_as_text(
    launch_server: LaunchServer, tiny_http: httpx.Client
) -> None:
    """Clients that send tools by habit (Open WebUI, LangChain) are served, not refused."""
    plain = post(tiny_http, max_tokens=4, temperature=0.0)
    assert plain.status_code == 200, plain.text
    plain_prompt = plain.json()["usage"]["prompt_tokens"]
    for choice in (None, "auto", None):
        fields: dict[str, Any] = {"tools": TOOLS, "temperature": 0.0}
        if choice is not None:
            fields["tool_choice"] = choice
        resp = post(tiny_http, **fields)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        message = body["choices"][0]["message"]
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert message.get("tool_calls") is None and isinstance(message["content"], str)
        # The template was given the tools: the prompt grew by their JSON.
        assert body["usage"]["prompt_tokens"] > plain_prompt + 50
    log = launch_server().log_path.read_text(encoding="utf-8", errors="replace")
    assert log.count("tool-call parsing is off") == 1
    assert "--enable-auto-tool-choice --tool-call-parser" in log


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": NAMED}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_bad_tool_choice_is_400(
    tiny_http: httpx.Client, fields: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(post(tiny_http, **fields), 400)
    assert error["param"] == param or param in error["message"]


def test_sdk_raises_for_unknown_function(client: Any) -> None:
    with pytest.raises(openai.BadRequestError):
        chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})


# -- a server with parsers ------------------------------------------------------------


def test_agent_server_reports_its_parsers(agent_server: str) -> None:
    features = httpx.get(f"{agent_server}/v1/capabilities", timeout=10).json()["features"]
    assert features["auto_tool_choice"] is True
    assert features["tool_call_parser"] == "hermes"
    assert features["reasoning"] is True and features["reasoning_parser"] == "qwen3"


def test_agent_server_serves_plain_requests(agent_server: str, client: Any) -> None:
    expected = chat(client, max_tokens=24).choices[0].message.content
    with openai_client(agent_server) as agent:
        response = chat(agent, max_tokens=24)
        assert response.choices[0].message.content == expected  # no think block: all content
        assert response.choices[0].finish_reason == "length"
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in chat(agent, max_tokens=24, stream=True)
            if c.choices
        )
        assert streamed == expected
        # tool_choice auto is allowed here; the tiny model writes no <tool_call>.
        auto = chat(agent, tools=TOOLS, tool_choice="auto", max_tokens=24).choices[0]
        assert auto.finish_reason == "length" and not auto.message.tool_calls
        assert auto.message.content
        # Forced calls still work next to the reasoning parser.
        assert the_call(chat(agent, tools=TOOLS, tool_choice=NAMED)).function.name == "get_weather"


def test_agent_server_serves_anthropic_requests_with_tools(agent_server: str) -> None:
    body = {
        "model": "default",
        "max_tokens": 8,
        "temperature": 0,
        "messages": ASK,
        "tools": [{"name": "get_weather", "input_schema": WEATHER_PARAMS}],
    }
    resp = httpx.post(f"{agent_server}/v1/messages", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"][0]["type"] == "text"
    assert resp.json()["stop_reason"] == "max_tokens"
