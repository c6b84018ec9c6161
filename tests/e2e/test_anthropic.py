"""/v1/messages and /v1/messages/count_tokens through the official ``anthropic`` SDK.

The tiny llama fixture never ends a turn by itself under greedy decoding, so
plain requests finish with ``max_tokens``; stop sequences and forced tool calls
(constrained decoding) give the other stop reasons. The slow tests at the end
replay a Claude Code request (fixtures/claude_code_request.json) on the embedded
model; fixtures/claude_code_transcript.txt holds one answer observed that way.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import openai_client, wait_idle
from tests.fixtures.tools import WEATHER_PARAMS

USER = [{"role": "user", "content": "Tell me a story about the sea."}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER_PARAMS,
}
CLOCK = {
    "name": "get_time",
    "description": "Current time in a timezone",
    "input_schema": {
        "type": "object",
        "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}},
        "required": ["tz"],
    },
}
STREAM_ORDER_HEAD = ["message_start", "ping", "content_block_start"]
STREAM_ORDER_TAIL = ["content_block_stop", "message_delta", "message_stop"]


@pytest.fixture(scope="module")
def client(tiny_server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=tiny_server, api_key="x", max_retries=0, timeout=120) as sdk:
        yield sdk


def sampling(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Request kwargs with the usual defaults. This SDK has no ``temperature``
    argument any more (newer Claude models fix sampling), so it goes in extra_body."""
    kwargs.setdefault("model", "default")
    kwargs.setdefault("messages", USER)
    kwargs.setdefault("max_tokens", 16)
    extra = {"temperature": kwargs.pop("temperature", 0.0), **kwargs.pop("extra_body", {})}
    return {**kwargs, "extra_body": extra}


def create(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    return client.messages.create(**sampling(kwargs))


def stream(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    return client.messages.stream(**sampling(kwargs))


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def raw_events(http: httpx.Client, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a streamed /v1/messages response, format checked."""
    with http.stream("POST", "/v1/messages", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = list(resp.iter_lines())
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            assert name == data["type"], (name, data)
            events.append((name, data))
            name = None
        else:
            assert line == "", line
    return events


# -- plain messages -----------------------------------------------------------------


def test_non_stream_message(client: anthropic.Anthropic) -> None:
    message = create(client, max_tokens=12)
    assert message.id.startswith("msg_") and len(message.id) > 8
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "default"
    assert message.stop_reason == "max_tokens" and message.stop_sequence is None
    assert message.usage.input_tokens > 5
    assert message.usage.output_tokens == 12
    assert message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert create(client, max_tokens=12).id != message.id


def test_model_name_is_echoed(client: anthropic.Anthropic) -> None:
    assert create(client, model="claude-sonnet-4-20250514", max_tokens=2).model == (
        "claude-sonnet-4-20250514"
    )


def test_stream_text_equals_non_stream(client: anthropic.Anthropic) -> None:
    expected = create(client, max_tokens=24)
    with stream(client, max_tokens=24) as events:
        streamed = "".join(events.text_stream)
        final = events.get_final_message()
    assert streamed == text_of(expected)
    assert text_of(final) == streamed
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == expected.usage.output_tokens == 24
    assert final.usage.input_tokens == expected.usage.input_tokens
    assert final.id.startswith("msg_")


def test_raw_stream_event_order(tiny_http: httpx.Client) -> None:
    body = {"model": "default", "messages": USER, "max_tokens": 6, "temperature": 0}
    events = raw_events(tiny_http, body)
    kinds = [name for name, _ in events]
    deltas = kinds[len(STREAM_ORDER_HEAD) : -len(STREAM_ORDER_TAIL)]
    assert kinds[:3] == STREAM_ORDER_HEAD and kinds[-3:] == STREAM_ORDER_TAIL, kinds
    assert deltas and set(deltas) == {"content_block_delta"}, kinds
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == []
    assert start["stop_reason"] is None and start["usage"]["input_tokens"] > 5
    assert events[2][1]["content_block"] == {"type": "text", "text": ""}
    assert {data["index"] for name, data in events if "index" in data} == {0}
    message_delta = events[-2][1]
    assert message_delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert message_delta["usage"]["output_tokens"] == 6


def test_request_id_header(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="default",
        messages=USER,
        max_tokens=2,
        extra_headers={"x-request-id": "anthropic-rid-1"},
    )
    assert raw.headers["x-request-id"] == "anthropic-rid-1"
    assert raw.parse().usage.output_tokens == 2


# -- system, turns, stop --------------------------------------------------------------


def test_system_as_blocks_equals_joined_string(client: anthropic.Anthropic) -> None:
    blocks = [
        {"type": "text", "text": "You are a helpful assistant."},
        {"type": "text", "text": "Be concise.", "cache_control": {"type": "ephemeral"}},
    ]
    as_blocks = create(client, system=blocks)
    as_string = create(client, system="You are a helpful assistant.\n\nBe concise.")
    plain = create(client)

    def prompt(usage: Any) -> int:
        return int(usage.input_tokens + (usage.cache_read_input_tokens or 0))

    assert prompt(as_blocks.usage) == prompt(as_string.usage)
    assert as_blocks.usage.input_tokens > plain.usage.input_tokens
    assert text_of(as_blocks) == text_of(as_string)


def test_multi_turn(client: anthropic.Anthropic) -> None:
    messages = [
        {"role": "user", "content": "My name is Alice."},
        {"role": "assistant", "content": "Nice to meet you, Alice!"},
        {"role": "user", "content": [{"type": "text", "text": "What's my name?"}]},
    ]
    last = create(client, messages=messages[-1:])
    full = create(client, messages=messages)
    assert full.usage.input_tokens > last.usage.input_tokens
    assert text_of(full) and full.stop_reason == "max_tokens"
    counted = client.messages.count_tokens(model="default", messages=messages)
    assert_usage_matches_count(full.usage, counted.input_tokens)


def pick_stop(text: str) -> str:
    """A short piece from the middle of text whose first occurrence is past the start."""
    for start in range(len(text) // 3, len(text) - 3):
        candidate = text[start : start + 3]
        if candidate.strip() and text.find(candidate) == start:
            return candidate
    raise AssertionError(f"no usable stop sequence in {text!r}")


def test_stop_sequence(client: anthropic.Anthropic) -> None:
    full_text = text_of(create(client, max_tokens=32))
    stop = pick_stop(full_text)
    message = create(client, max_tokens=32, stop_sequences=["never-in-output", stop])
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == stop
    assert text_of(message) == full_text[: full_text.index(stop)]
    assert message.usage.output_tokens < 32
    with stream(client, max_tokens=32, stop_sequences=[stop]) as events:
        assert "".join(events.text_stream) == text_of(message)
        final = events.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


def test_max_tokens_stop_reason(client: anthropic.Anthropic) -> None:
    message = create(client, max_tokens=1)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 1


# -- tools ----------------------------------------------------------------------------


def forced_call(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("tools", [WEATHER, CLOCK])
    kwargs.setdefault("tool_choice", {"type": "tool", "name": "get_weather"})
    kwargs.setdefault("messages", [{"role": "user", "content": "What's the weather in Paris?"}])
    kwargs.setdefault("max_tokens", 96)
    return create(client, **kwargs)


def test_forced_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    first = forced_call(client)
    assert first.stop_reason == "tool_use"
    tool_uses = [b for b in first.content if b.type == "tool_use"]
    assert len(tool_uses) == 1, first.content
    call = tool_uses[0]
    assert call.name == "get_weather" and call.id
    jsonschema.validate(call.input, WEATHER_PARAMS)

    messages = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 22C"}],
        },
    ]
    answer = create(client, messages=messages, tools=[WEATHER, CLOCK], max_tokens=12)
    assert answer.content[0].type == "text" and text_of(answer)
    assert answer.stop_reason == "max_tokens"

    def prompt(usage: Any) -> int:
        return int(usage.input_tokens + (usage.cache_read_input_tokens or 0))

    assert prompt(answer.usage) > prompt(first.usage)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_forced_tool_input_is_schema_valid(client: anthropic.Anthropic, temperature: float) -> None:
    for _ in range(2 if temperature else 1):
        message = forced_call(client, temperature=temperature)
        (call,) = [b for b in message.content if b.type == "tool_use"]
        jsonschema.validate(call.input, WEATHER_PARAMS)
        assert message.stop_reason == "tool_use"


def test_tool_choice_any_calls_one_of_the_tools(client: anthropic.Anthropic) -> None:
    message = forced_call(client, tool_choice={"type": "any"}, temperature=1.0)
    (call,) = [b for b in message.content if b.type == "tool_use"]
    schema = {"get_weather": WEATHER_PARAMS, "get_time": CLOCK["input_schema"]}[call.name]
    jsonschema.validate(call.input, schema)
    assert message.stop_reason == "tool_use"


def test_streamed_forced_tool_use_equals_non_stream(client: anthropic.Anthropic) -> None:
    expected = forced_call(client)
    (want,) = [b for b in expected.content if b.type == "tool_use"]
    with stream(
        client,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "tool", "name": "get_weather"},
        max_tokens=96,
    ) as events:
        final = events.get_final_message()
    (got,) = [b for b in final.content if b.type == "tool_use"]
    assert (got.name, got.input) == (want.name, want.input)
    assert final.stop_reason == "tool_use"


def test_tool_choice_none_and_auto_without_parser_give_text(client: anthropic.Anthropic) -> None:
    for choice in ({"type": "none"}, {"type": "auto"}):
        message = forced_call(client, tool_choice=choice, max_tokens=8)
        assert [b.type for b in message.content] == ["text"]
        assert message.stop_reason == "max_tokens"


def test_truncated_forced_call_is_text_with_max_tokens(client: anthropic.Anthropic) -> None:
    message = forced_call(client, max_tokens=3)
    assert message.stop_reason == "max_tokens"
    assert [b.type for b in message.content] == ["text"]
    assert text_of(message).startswith("{")


# -- count_tokens ----------------------------------------------------------------------


def count(client: anthropic.Anthropic, **kwargs: Any) -> int:
    kwargs.setdefault("model", "default")
    kwargs.setdefault("messages", USER)
    return int(client.messages.count_tokens(**kwargs).input_tokens)


def tool_history(result: Any, command: str = "ls") -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "List the files."},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {"tz": command}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}],
        },
    ]


def assert_usage_matches_count(usage: Any, counted: int) -> None:
    """count_tokens is the whole prompt; Anthropic usage splits it into input_tokens,
    cache_read_input_tokens and cache_creation_input_tokens, which add up to it."""
    get = usage.get if isinstance(usage, dict) else lambda k: getattr(usage, k, None)
    read, creation = get("cache_read_input_tokens") or 0, get("cache_creation_input_tokens") or 0
    assert get("input_tokens") + read + creation == counted


def test_count_tokens_equals_usage_input_tokens(client: anthropic.Anthropic) -> None:
    request: dict[str, Any] = {
        "system": [{"type": "text", "text": f"Session {uuid.uuid4().hex}. You are terse."}],
        "messages": tool_history([{"type": "text", "text": "a.txt b.txt"}]),
        "tools": [WEATHER, CLOCK],
    }
    counted = count(client, **request)
    assert_usage_matches_count(create(client, max_tokens=1, **request).usage, counted)
    assert_usage_matches_count(create(client, max_tokens=1, **request).usage, counted)


def test_count_tokens_is_the_exact_prompt_length(
    client: anthropic.Anthropic, tiny_server: str
) -> None:
    # The same conversation through the OpenAI route, whose prompt_tokens is the whole prompt.
    system = f"Session {uuid.uuid4().hex}. You are terse."
    counted = count(client, system=system)
    with openai_client(tiny_server) as oai:
        chat = oai.chat.completions.create(
            model="default",
            messages=[{"role": "system", "content": system}, *USER],
            max_tokens=1,
        )
    assert counted == chat.usage.prompt_tokens
    assert create(client, system=system, max_tokens=1).usage.input_tokens <= counted


def test_count_tokens_counts_system_and_messages(client: anthropic.Anthropic) -> None:
    base = count(client)
    assert count(client, system="You are a very careful assistant.") > base
    assert count(client, system=[{"type": "text", "text": "You are careful."}]) > base
    longer = [
        *USER,
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Go on."},
    ]
    assert count(client, messages=longer) > base


def test_count_tokens_counts_tool_result_content(client: anthropic.Anthropic) -> None:
    short = count(client, messages=tool_history("a.txt"))
    long = count(client, messages=tool_history("a.txt b.txt c.txt d.txt e.txt f.txt"))
    blocks = count(client, messages=tool_history([{"type": "text", "text": "a.txt b.txt c.txt"}]))
    assert short < blocks < long


def test_count_tokens_counts_tool_definitions(client: anthropic.Anthropic) -> None:
    none = count(client)
    one = count(client, tools=[WEATHER])
    two = count(client, tools=[WEATHER, CLOCK])
    assert none < one < two


def test_count_tokens_counts_tool_use_input(client: anthropic.Anthropic) -> None:
    short = count(client, messages=tool_history("ok", command="UTC"))
    long = count(client, messages=tool_history("ok", command="UTC " * 20))
    assert short < long


def test_usage_input_parts_add_up_to_count_tokens(client: anthropic.Anthropic) -> None:
    # Anthropic: total input = input_tokens + cache_read_input_tokens + cache_creation_input_tokens.
    messages = [{"role": "user", "content": "Count me twice, please. " * 4}]
    counted = count(client, messages=messages)
    for _ in range(2):  # the second request reads the prompt from the prefix cache
        usage = create(client, messages=messages, max_tokens=1).usage
        total = usage.input_tokens + (usage.cache_read_input_tokens or 0)
        total += usage.cache_creation_input_tokens or 0
        assert total == counted


# -- errors ---------------------------------------------------------------------------

ERRORS = {
    "missing_max_tokens": {"messages": USER},
    "empty_messages": {"messages": [], "max_tokens": 4},
    "wrong_role": {"messages": [{"role": "tool", "content": "Hi"}], "max_tokens": 4},
    "only_system": {"messages": [{"role": "system", "content": "Hi"}], "max_tokens": 4},
    "bad_block_type": {
        "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}],
        "max_tokens": 4,
    },
    "temperature_5": {"messages": USER, "max_tokens": 4, "temperature": 5},
    "max_tokens_zero": {"messages": USER, "max_tokens": 0},
    "image": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    }
                ],
            }
        ],
        "max_tokens": 4,
    },
    "unknown_forced_tool": {
        "messages": USER,
        "max_tokens": 4,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "nope"},
    },
    "stream_with_bad_body": {"messages": [], "max_tokens": 4, "stream": True},
}


def assert_anthropic_error(resp: httpx.Response, status: int, error_type: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"type", "error"}, body
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_requests_get_anthropic_error_bodies(tiny_http: httpx.Client, name: str) -> None:
    resp = tiny_http.post("/v1/messages", json={"model": "default", **ERRORS[name]})
    assert_anthropic_error(resp, 400, "invalid_request_error")


def test_error_messages_name_the_field(tiny_http: httpx.Client) -> None:
    for name, field in [("missing_max_tokens", "max_tokens"), ("temperature_5", "temperature")]:
        resp = tiny_http.post("/v1/messages", json={"model": "default", **ERRORS[name]})
        assert field in assert_anthropic_error(resp, 400, "invalid_request_error")


def test_malformed_json_and_count_tokens_errors(tiny_http: httpx.Client) -> None:
    resp = tiny_http.post(
        "/v1/messages", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert_anthropic_error(resp, 400, "invalid_request_error")
    resp = tiny_http.post("/v1/messages/count_tokens", json={"model": "default", "messages": []})
    assert_anthropic_error(resp, 400, "invalid_request_error")


def test_sdk_raises_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, temperature=5.0)
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# -- disconnects ------------------------------------------------------------------------


@pytest.mark.slow
def test_disconnect_mid_stream_then_a_normal_request(
    launch_server: LaunchServer, tiny_llama_long_path: Path
) -> None:
    url = launch_server(model=tiny_llama_long_path).base_url
    body = {"model": "default", "messages": USER, "max_tokens": 20000, "temperature": 0}
    before = httpx.get(f"{url}/v1/status", timeout=10).json()["total_completion_tokens"]
    with (
        httpx.Client(base_url=url, timeout=60) as http,
        http.stream("POST", "/v1/messages", json={**body, "stream": True}) as resp,
    ):
        assert resp.status_code == 200
        seen = 0
        for line in resp.iter_lines():
            seen += line == "event: content_block_delta"
            if seen == 3:
                break
    started = time.monotonic()
    # The server notices and aborts; it does not go on to 20000 tokens.
    wait_idle(url, timeout_s=10)
    assert time.monotonic() - started < 10
    after = httpx.get(f"{url}/v1/status", timeout=10).json()["total_completion_tokens"]
    assert after - before < 20000
    with anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as sdk:
        message = create(sdk, max_tokens=4)
    assert message.usage.output_tokens == 4 and message.stop_reason == "max_tokens"


@pytest.mark.slow
def test_disconnect_without_stream_aborts(
    launch_server: LaunchServer, tiny_llama_long_path: Path
) -> None:
    url = launch_server(model=tiny_llama_long_path).base_url
    body = {"model": "default", "messages": USER, "max_tokens": 20000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/messages", json=body, timeout=1.0)
    wait_idle(url, timeout_s=10)
    resp = httpx.post(f"{url}/v1/messages", json={**body, "max_tokens": 3}, timeout=60)
    assert resp.status_code == 200 and resp.json()["usage"]["output_tokens"] == 3


# -- Claude Code replay (embedded model) -------------------------------------------------

CLAUDE_CODE_REQUEST = Path(__file__).parent / "fixtures" / "claude_code_request.json"
# Headers Claude Code sends with every /v1/messages?beta=true request.
CLAUDE_CODE_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
    "fine-grained-tool-streaming-2025-05-14",
    "anthropic-dangerous-direct-browser-access": "true",
    "x-app": "cli",
    "user-agent": "claude-cli/1.0.83 (external, cli)",
    "x-api-key": "not-needed",
}
REPLAY_MAX_TOKENS = 48  # keeps the embedded model's answer short on a small CPU


def claude_code_body(**overrides: Any) -> dict[str, Any]:
    body = json.loads(CLAUDE_CODE_REQUEST.read_text(encoding="utf-8"))
    return {**body, **overrides}


@pytest.fixture(scope="module")
def claude_code_server(launch_server: LaunchServer) -> str:
    args = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
    return launch_server(*args, model=None, startup_timeout_s=600).base_url


def check_claude_code_blocks(blocks: list[dict[str, Any]], stop_reason: str) -> None:
    """A text or tool_use answer; tool inputs fit the tool's input_schema."""
    schemas = {t["name"]: t["input_schema"] for t in claude_code_body()["tools"]}
    assert blocks, "no content block"
    assert {b["type"] for b in blocks} <= {"text", "tool_use"}, blocks
    calls = [b for b in blocks if b["type"] == "tool_use"]
    for call in calls:
        jsonschema.validate(call["input"], schemas[call["name"]])
    if calls:
        assert stop_reason == "tool_use"
    else:
        assert stop_reason in ("end_turn", "max_tokens"), stop_reason


def stream_blocks(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            assert data["index"] == len(blocks)
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                blocks[data["index"]]["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta", delta
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
    for index, text in partial.items():
        blocks[index]["input"] = json.loads(text)
    return blocks


def check_event_grammar(kinds: list[str], ping: bool = True) -> None:
    """message_start ping (block_start block_delta* block_stop)+ message_delta message_stop."""
    head = ["message_start", "ping"] if ping else ["message_start"]
    assert kinds[: len(head)] == head, kinds
    assert kinds[-2:] == ["message_delta", "message_stop"], kinds
    body, blocks = kinds[len(head) : -2], 0
    while body:
        assert body[0] == "content_block_start", kinds
        stop = body.index("content_block_stop")
        assert set(body[1:stop]) <= {"content_block_delta"}, kinds
        body, blocks = body[stop + 1 :], blocks + 1
    assert blocks >= 1, kinds


@pytest.mark.slow
def test_claude_code_request_verbatim(claude_code_server: str) -> None:
    body = claude_code_body()
    assert body["max_tokens"] == 32000 and body["stream"] is True
    with (
        httpx.Client(base_url=claude_code_server, timeout=600) as http,
        http.stream(
            "POST", "/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS
        ) as resp,
    ):
        assert resp.status_code == 200, resp.read()
        # The first block is enough; leaving early aborts the long generation.
        for line in resp.iter_lines():
            if line == "event: content_block_start":
                break
        else:
            raise AssertionError("the stream ended without a content block")


@pytest.mark.slow
def test_claude_code_replay_raw(claude_code_server: str) -> None:
    body = claude_code_body(max_tokens=REPLAY_MAX_TOKENS)
    count_body = {k: body[k] for k in ("model", "messages", "system", "tools")}
    with httpx.Client(
        base_url=claude_code_server, timeout=600, headers=CLAUDE_CODE_HEADERS
    ) as http:
        counted = http.post("/v1/messages/count_tokens?beta=true", json=count_body)
        assert counted.status_code == 200, counted.text
        # count_tokens also takes the whole request body, as the SDK may send it.
        whole = http.post("/v1/messages/count_tokens?beta=true", json=body)
        assert whole.status_code == 200 and whole.json() == counted.json()
        with http.stream("POST", "/v1/messages?beta=true", json=body) as resp:
            assert resp.status_code == 200, resp.read()
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers.get("x-request-id")
            lines = list(resp.iter_lines())
    events = []
    for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
    kinds = [e["type"] for e in events]
    assert [line.removeprefix("event: ") for line in lines if line.startswith("event: ")] == kinds
    check_event_grammar(kinds)
    start, delta = events[0]["message"], events[-2]
    assert start["model"] == body["model"] and start["id"].startswith("msg_")
    assert start["usage"]["input_tokens"] > 100
    usage = delta["usage"]
    assert 1 <= usage["output_tokens"] <= REPLAY_MAX_TOKENS
    assert_usage_matches_count(usage, counted.json()["input_tokens"])
    blocks = stream_blocks([(e["type"], e) for e in events])
    check_claude_code_blocks(blocks, delta["delta"]["stop_reason"])
    if delta["delta"]["stop_reason"] == "max_tokens":
        assert usage["output_tokens"] == REPLAY_MAX_TOKENS


@pytest.mark.slow
def test_claude_code_replay_through_the_sdk(claude_code_server: str) -> None:
    body = claude_code_body(max_tokens=REPLAY_MAX_TOKENS)
    headers = {k: v for k, v in CLAUDE_CODE_HEADERS.items() if k != "x-api-key"}
    with anthropic.Anthropic(
        base_url=claude_code_server, api_key="not-needed", max_retries=0, timeout=600
    ) as sdk:
        counted = sdk.messages.count_tokens(
            model=body["model"],
            messages=body["messages"],
            system=body["system"],
            tools=body["tools"],
        ).input_tokens
        with sdk.messages.stream(
            model=body["model"],
            max_tokens=body["max_tokens"],
            messages=body["messages"],
            system=body["system"],
            tools=body["tools"],
            metadata=body["metadata"],
            extra_body={"temperature": body["temperature"]},
            extra_headers=headers,
            extra_query={"beta": "true"},
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
    # The SDK's own event types: the raw events (it drops ping) plus its text helpers.
    raw = [
        k
        for k in kinds
        if k
        in {
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        }
    ]
    check_event_grammar(raw, ping=False)
    assert final.model == body["model"] and final.role == "assistant"
    blocks = [b.to_dict() for b in final.content]
    check_claude_code_blocks(blocks, str(final.stop_reason))
    assert 1 <= final.usage.output_tokens <= REPLAY_MAX_TOKENS
    assert_usage_matches_count(final.usage, counted)
