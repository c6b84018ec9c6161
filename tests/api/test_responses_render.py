"""Output deltas → Responses items and events; plain and streamed bodies agree.

Every event and body is validated against the ``openai`` SDK's own types.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, get_args

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel

from vllm_mlx.api.errors import APIError
from vllm_mlx.api.generation import ChoiceResult
from vllm_mlx.api.openai.responses import render
from vllm_mlx.api.openai.responses.events import EventLog, OutputItems
from vllm_mlx.api.output import OutputDelta, OutputProcessor
from vllm_mlx.engine.types import (
    Finished,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    Usage,
)
from vllm_mlx.parsers.reasoning.registry import get_reasoning_parser
from vllm_mlx.parsers.tools.base import ToolCallDelta
from vllm_mlx.parsers.tools.registry import get_tool_parser


def _event_types() -> dict[str, type[BaseModel]]:
    """The SDK's event class for each ``type`` (its union has no pydantic discriminator)."""
    (union, *_) = get_args(ResponseStreamEvent)
    return {get_args(c.model_fields["type"].annotation)[0]: c for c in get_args(union)}


EVENT_TYPES = _event_types()
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
THINK_TALK_CALL = (
    '<think>Let me see.</think>Calling f. <tool_call>{"name": "f", "arguments": {"a": 1}}'
    "</tool_call>"
)
USAGE = Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=4)
REQUEST = GenerationRequest(
    request_id="r", prompt_token_ids=(1, 2), sampling=SamplingParams(max_tokens=5)
)
META = render.ResponseMeta(
    "resp_1",
    123,
    {
        "model": "default",
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": 0.0,
        "top_p": 1.0,
    },
)


def plain() -> OutputProcessor:
    return OutputProcessor()


def agent() -> OutputProcessor:
    reasoning = get_reasoning_parser("qwen3")(None)
    return OutputProcessor(reasoning, get_tool_parser("hermes")(TOOLS))


def count(text: str) -> int:
    return len(text.split())


class FakeEngine:
    """Streams ``text`` one character per token, then finishes (or fails)."""

    def __init__(self, text: str, reason: FinishReason = FinishReason.STOP) -> None:
        self.text, self.reason = text, reason

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Any]:
        for i, char in enumerate(self.text):
            yield TokenDelta(char, (i,))
        yield Finished(self.reason, USAGE)


def run_stream(engine: Any, make: Callable[[], OutputProcessor]) -> list[dict[str, Any]]:
    stored: list[dict[str, Any]] = []

    async def go() -> list[bytes]:
        chunks = render.stream_response(
            engine, REQUEST, META, make, 5.0, count, lambda body, _: stored.append(body)
        )
        return [c async for c in chunks]

    events = []
    for chunk in asyncio.run(go()):
        head, data = chunk.decode().strip().split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        EVENT_TYPES[event["type"]].model_validate(event)  # the SDK's own event types
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    if stored:
        assert stored == [events[-1]["response"]]
    return events


def full(text: str, make: Callable[[], OutputProcessor], reason: FinishReason) -> dict[str, Any]:
    result = ChoiceResult(text, list(range(len(text))), [], Finished(reason, USAGE))
    body = render.full_response(META, result, make, count)
    Response.model_validate(body)
    return body


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "completed_at"}
    out["output"] = [
        {k: v for k, v in i.items() if k not in ("id", "call_id")} for i in out["output"]
    ]
    return out


def test_plain_text_event_sequence() -> None:
    kinds = [e["type"] for e in run_stream(FakeEngine("Hi!"), plain)]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_reasoning_text_and_call_items() -> None:
    events = run_stream(FakeEngine(THINK_TALK_CALL), agent)
    output = events[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["reasoning", "message", "function_call"]
    assert output[0]["content"] == [{"type": "reasoning_text", "text": "Let me see."}]
    assert output[1]["content"][0]["text"].strip() == "Calling f."
    assert output[1]["content"][0]["annotations"] == []
    assert (output[2]["name"], json.loads(output[2]["arguments"])) == ("f", {"a": 1})
    assert output[2]["call_id"].startswith("call_") and output[2]["id"].startswith("fc_")
    kinds = {e["type"] for e in events}
    assert {"response.reasoning_text.delta", "response.function_call_arguments.done"} <= kinds
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == output
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens_details"] == {"reasoning_tokens": 3}
    assert usage["input_tokens_details"]["cached_tokens"] == 4
    assert usage["total_tokens"] == 15


@pytest.mark.parametrize("text", ["Hello there.", THINK_TALK_CALL, ""])
@pytest.mark.parametrize("reason", [FinishReason.STOP, FinishReason.LENGTH])
def test_stream_adds_up_to_the_plain_body(text: str, reason: FinishReason) -> None:
    make = agent if "<think>" in text else plain
    streamed = run_stream(FakeEngine(text, reason), make)[-1]["response"]
    assert without_ids(streamed) == without_ids(full(text, make, reason))


def test_length_cut_is_incomplete() -> None:
    events = run_stream(FakeEngine("abc", FinishReason.LENGTH), plain)
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"


def test_empty_output_is_an_empty_message() -> None:
    body = full("", plain, FinishReason.STOP)
    assert [i["type"] for i in body["output"]] == ["message"]
    assert body["output"][0]["content"][0]["text"] == ""


def test_engine_failure_ends_the_stream_as_failed() -> None:
    class Failing(FakeEngine):
        async def generate(self, request: GenerationRequest) -> AsyncIterator[Any]:
            yield TokenDelta("a", (1,))
            raise APIError("boom")

    events = run_stream(Failing("a"), plain)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "invalid_prompt", "message": "boom"}


def test_a_call_without_name_continues_the_open_call() -> None:
    items = OutputItems(EventLog())
    items.add(OutputDelta(tool_calls=(ToolCallDelta(0, "c1", "f", '{"a"'),)))
    items.add(OutputDelta(tool_calls=(ToolCallDelta(0, None, None, ": 1}"),)))
    items.finish("completed")
    (call,) = items.items
    assert (call["call_id"], call["arguments"], call["status"]) == ("c1", '{"a": 1}', "completed")


def test_a_namespaced_call_names_its_namespace() -> None:
    items = OutputItems(EventLog(), {"spawn": "agents"})
    events = items.add(OutputDelta(tool_calls=(ToolCallDelta(0, "c1", "spawn", "{}"),)))
    events += items.finish("completed")
    for event in events:
        EVENT_TYPES[event["type"]].model_validate(event)
    assert items.items[0]["namespace"] == "agents"


def test_without_parallel_calls_only_the_first_is_kept() -> None:
    items = OutputItems(EventLog(), parallel=False)
    calls = (ToolCallDelta(0, "c1", "f", "{}"), ToolCallDelta(1, "c2", "g", "{}"))
    items.add(OutputDelta(tool_calls=calls))
    items.finish("completed")
    assert [i["call_id"] for i in items.items] == ["c1"]
