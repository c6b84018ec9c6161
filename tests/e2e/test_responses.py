"""POST /v1/responses through the official ``openai`` SDK, against real servers.

The embedded model (SmolLM2) answers the acceptance scenarios: a plain answer, a
stream that adds up to it, a forced function call, a JSON-schema answer and a second
turn by ``previous_response_id`` served from the prefix cache; the same scenarios
then run eight at a time under ``--runtime-mode batched``. The tiny llama server
answers the refusals and the store's GET/DELETE (fast).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import LiveServer, assert_openai_error, openai_client

BLOCK_SIZE = 16  # the KV block: the prefix cache serves whole blocks
QUESTION = "What is the capital of France?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Tokyo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
GREEDY = {"model": "default", "temperature": 0.0}


@pytest.fixture(scope="module")
def smol(launch_server: LaunchServer) -> LiveServer:
    return launch_server(model=None, startup_timeout_s=600)


@pytest.fixture(scope="module")
def client(smol: LiveServer) -> Iterator[Any]:
    with openai_client(smol.base_url) as sdk:
        yield sdk


# -- the four scenarios; each returns what must not change under batching ---------------


def plain(client: Any) -> tuple[Any, ...]:
    resp = client.responses.create(input=QUESTION, max_output_tokens=32, **GREEDY)
    return resp.status, resp.output_text


def forced_call(client: Any) -> tuple[Any, ...]:
    resp = client.responses.create(
        input="What is the weather in Tokyo right now?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        **GREEDY,
    )
    (call,) = resp.output
    return call.type, call.name, json.loads(call.arguments)


def json_answer(client: Any) -> tuple[Any, ...]:
    resp = client.responses.create(
        input="Invent a person. Answer with JSON holding their name and age.",
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}},
        max_output_tokens=64,
        **GREEDY,
    )
    return resp.status, json.loads(resp.output_text)


def two_turns(client: Any) -> tuple[Any, ...]:
    first = client.responses.create(
        instructions="You are a storyteller.",
        input="Tell me a story about a lighthouse keeper.",
        max_output_tokens=48,
        **GREEDY,
    )
    second = client.responses.create(
        instructions="You are a storyteller.",
        input="Now give the story a title.",
        previous_response_id=first.id,
        max_output_tokens=16,
        **GREEDY,
    )
    return first.output_text, second.output_text, first.usage, second.usage


SCENARIOS: list[Callable[[Any], tuple[Any, ...]]] = [plain, forced_call, json_answer, two_turns]


def _sans_cache(result: tuple[Any, ...]) -> tuple[Any, ...]:
    """Cache hits depend on what ran before; the answers and counts must not."""
    return tuple(
        (r.input_tokens, r.output_tokens) if hasattr(r, "input_tokens_details") else r
        for r in result
    )


def _item(item: Any) -> dict[str, Any]:
    """An output item without its id and the stream helper's own ``parsed`` field."""
    out: dict[str, Any] = item.model_dump(exclude={"id"})
    for part in out.get("content") or []:
        part.pop("parsed", None)
    return out


# -- embedded model -----------------------------------------------------------------


@pytest.mark.slow
def test_plain_answer(client: Any) -> None:
    status, text = plain(client)
    assert status == "completed" and "Paris" in text, text


@pytest.mark.slow
def test_stream_adds_up_to_the_plain_response(client: Any) -> None:
    kwargs = {"input": QUESTION, "max_output_tokens": 32, **GREEDY}
    full = client.responses.create(**kwargs)
    with client.responses.stream(**kwargs) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert streamed.output_text == full.output_text and "Paris" in full.output_text
    assert streamed.status == full.status == "completed"
    skip = {"id", "created_at", "completed_at", "usage", "output"}
    assert streamed.model_dump(exclude=skip) == full.model_dump(exclude=skip)
    assert [_item(i) for i in streamed.output] == [_item(i) for i in full.output]
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (
        full.usage.input_tokens,
        full.usage.output_tokens,
    )


@pytest.mark.slow
def test_forced_function_call(client: Any) -> None:
    kind, name, arguments = forced_call(client)
    assert (kind, name) == ("function_call", "get_weather")
    jsonschema.validate(arguments, WEATHER["parameters"])


@pytest.mark.slow
def test_streamed_function_call(client: Any) -> None:
    with client.responses.stream(
        input="Weather in Rome?", tools=[WEATHER], tool_choice="required", **GREEDY
    ) as stream:
        kinds = [event.type for event in stream]
        (call,) = stream.get_final_response().output
    assert "response.function_call_arguments.done" in kinds
    assert call.type == "function_call" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


@pytest.mark.slow
def test_json_schema_answer_validates(client: Any) -> None:
    status, value = json_answer(client)
    assert status == "completed"
    jsonschema.validate(value, PERSON)


@pytest.mark.slow
def test_second_turn_is_served_from_the_cache(client: Any) -> None:
    _, second_text, first, second = two_turns(client)
    assert second_text
    # Turn 2's prompt starts with turn 1's prompt and reply, so the cache serves them.
    covered = first.input_tokens + first.output_tokens
    assert second.input_tokens > covered
    assert second.input_tokens_details.cached_tokens >= covered - BLOCK_SIZE, (first, second)
    assert second.input_tokens_details.cached_tokens >= first.input_tokens


@pytest.mark.slow
def test_concurrent_scenarios_match_one_at_a_time(launch_server: LaunchServer) -> None:
    server = launch_server("--runtime-mode", "batched", model=None, startup_timeout_s=600)
    with openai_client(server.base_url) as sdk:
        alone = [_sans_cache(run(sdk)) for run in SCENARIOS]
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(SCENARIOS[i % 4], sdk) for i in range(8)]
            together = [_sans_cache(f.result(timeout=600)) for f in futures]
    for i, result in enumerate(together):
        assert result == alone[i % 4], SCENARIOS[i % 4].__name__


# -- the tiny model: store and refusals ----------------------------------------------


def test_store_get_and_delete(tiny_server: str) -> None:
    with openai_client(tiny_server) as sdk:
        resp = sdk.responses.create(model="default", input="Hi", max_output_tokens=4)
        assert resp.id.startswith("resp_") and resp.status == "incomplete"
        assert resp.incomplete_details.reason == "max_output_tokens"
        assert sdk.responses.retrieve(resp.id).model_dump() == resp.model_dump()
        sdk.responses.delete(resp.id)
    for method in ("GET", "DELETE"):
        gone = httpx.request(method, f"{tiny_server}/v1/responses/{resp.id}", timeout=30)
        assert assert_openai_error(gone, 404)["type"] == "not_found_error"


def test_unstored_responses_cannot_be_continued(tiny_http: httpx.Client) -> None:
    body = {"model": "default", "input": "Hi", "max_output_tokens": 2, "store": False}
    resp = tiny_http.post("/v1/responses", json=body)
    assert resp.status_code == 200
    follow = {**body, "previous_response_id": resp.json()["id"]}
    error = assert_openai_error(tiny_http.post("/v1/responses", json=follow), 404)
    assert error["param"] == "previous_response_id"


def test_capabilities_list_the_route(tiny_http: httpx.Client) -> None:
    assert "/v1/responses" in tiny_http.get("/v1/capabilities").json()["endpoints"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "file_search"),
        ({"tools": [{"type": "code_interpreter"}, {"type": "mcp"}]}, "code_interpreter"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
        ({"input": [{"type": "computer_call_output"}]}, "computer_call_output"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input_image"),
        ({"input": [{"role": "robot", "content": "x"}]}, "role"),
        ({"input": 42}, "input"),
        ({"input": []}, "input"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "x"}}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": 7}}}},
            "text.format",
        ),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"background": True}, "background"),
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem(
    tiny_http: httpx.Client, fields: dict[str, Any], named: str
) -> None:
    body = {"model": "default", "input": "Hi", "max_output_tokens": 2, **fields}
    error = assert_openai_error(tiny_http.post("/v1/responses", json=body), (400, 404))
    assert named in error["message"] or named == error["param"], error


def test_malformed_json_is_a_400(tiny_http: httpx.Client) -> None:
    resp = tiny_http.post(
        "/v1/responses", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_openai_error(resp, 400)


def test_a_codex_shaped_request_streams(tiny_server: str) -> None:
    """Codex CLI's request: developer messages, a namespace of sub-agent tools, no store,
    fields this server ignores (include, prompt_cache_key, client_metadata)."""
    spawn = {"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}
    body = {
        "model": "default",
        "input": [
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "You are a coding agent."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "strict": False,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
            {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
             "tools": [spawn]},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"turn_id": "t1"},
    }  # fmt: skip
    with openai_client(tiny_server) as sdk:
        extra = {k: body.pop(k) for k in ("prompt_cache_key", "client_metadata")}
        with sdk.responses.stream(**body, max_output_tokens=4, extra_body=extra) as stream:
            kinds = [event.type for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"


def test_a_tool_result_continues_a_stored_call(tiny_server: str) -> None:
    """The agent loop by previous_response_id: turn 2 sends only the call's output."""
    with openai_client(tiny_server) as sdk:
        first = sdk.responses.create(
            input="Weather in Paris?", tools=[WEATHER], tool_choice="required", **GREEDY
        )
        (call,) = first.output
        second = sdk.responses.create(
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
            previous_response_id=first.id,
            tools=[WEATHER],
            max_output_tokens=4,
            **GREEDY,
        )
    assert call.type == "function_call" and second.output[0].type == "message"
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - BLOCK_SIZE
