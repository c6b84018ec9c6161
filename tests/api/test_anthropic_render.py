"""Anthropic rendering: full messages, stop reasons and the SSE event sequence.

Streams are driven by a fake engine client (``generate(request)`` yielding
TokenDelta/Finished) and real parsers (qwen3 reasoning, hermes tool calls).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from vllm_mlx.api.anthropic import render
from vllm_mlx.api.anthropic.render import MessageMeta
from vllm_mlx.api.generation import ChoiceResult
from vllm_mlx.api.output import ForcedToolCall, OutputProcessor
from vllm_mlx.engine.types import (
    EngineError,
    EngineEvent,
    ErrorKind,
    Finished,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    Usage,
)
from vllm_mlx.parsers.reasoning.registry import get_reasoning_parser
from vllm_mlx.parsers.tools.registry import get_tool_parser

META = MessageMeta("msg_1", "default")
REQUEST = GenerationRequest(
    request_id="r-1", prompt_token_ids=(1, 2, 3, 4, 5), sampling=SamplingParams(max_tokens=64)
)
USAGE = Usage(5, 9, 2)
DONE = Finished(FinishReason.STOP, USAGE)
SPECIAL = ("<|im_end|>",)

# Thinking, then text, then one hermes call: one content block each.
TOKENS = (
    "<think>",
    "\nWeather",
    " asked.",
    "\n</think>\n\n",
    "Let me",
    " check.",
    "\n<tool_call>\n",
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "\n</tool_call>",
    "<|im_end|>",
)


def agent_output() -> OutputProcessor:
    reasoning = get_reasoning_parser("qwen3")(None)
    return OutputProcessor(reasoning, get_tool_parser("hermes")(None), special_tokens=SPECIAL)


def text_output() -> OutputProcessor:
    return OutputProcessor(special_tokens=SPECIAL)


def deltas(chunks: Sequence[str]) -> list[EngineEvent]:
    return [TokenDelta(chunk, (i,)) for i, chunk in enumerate(chunks)]


class FakeEngine:
    """Plays scripted events for any request (the EngineClient.generate contract)."""

    def __init__(self, events: Sequence[EngineEvent]) -> None:
        self.events = list(events)
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        self.requests.append(request)
        for event in self.events:
            await asyncio.sleep(0)
            yield event


def stream(
    events: Sequence[EngineEvent], make: Callable[[], OutputProcessor] = text_output
) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of the SSE stream, checking the frame format."""

    async def collect() -> bytes:
        engine = FakeEngine(events)
        chunks = render.stream_message(engine, REQUEST, META, make, 30.0)  # type: ignore[arg-type]
        return b"".join([chunk async for chunk in chunks])

    raw = asyncio.run(collect()).decode()
    assert raw.endswith("\n\n")
    out = []
    for frame in raw.split("\n\n")[:-1]:
        name_line, data_line = frame.split("\n")
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        assert data["type"] == name
        out.append((name, data))
    return out


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


def blocks_from_stream(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rebuild the content blocks as an SDK would, checking indices on the way."""
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    open_index: int | None = None
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None, "a block started before the previous one stopped"
            assert data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            assert data["index"] == open_index
            delta, block = data["delta"], blocks[open_index]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            else:
                assert delta["type"] == "input_json_delta"
                partial[open_index] = partial.get(open_index, "") + delta["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    for index, text in partial.items():
        blocks[index]["input"] = json.loads(text)
    return [strip(b) for b in blocks]


def strip(block: dict[str, Any]) -> dict[str, Any]:
    """A block without the parts that may differ: a fresh call id and the thinking
    signature (streams send none: they have no signature_delta)."""
    return {k: v for k, v in block.items() if k not in ("id", "signature")}


def full(
    chunks: Sequence[str],
    finished: Finished = DONE,
    make: Callable[[], OutputProcessor] = text_output,
) -> dict[str, Any]:
    token_ids = list(range(len(chunks)))
    result = ChoiceResult("".join(chunks), token_ids, [], finished)
    return render.full_message(META, result, make)


# -- stop reasons -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finished", "tool_calls", "expected"),
    [
        (Finished(FinishReason.STOP, USAGE), False, "end_turn"),
        (Finished(FinishReason.LENGTH, USAGE), False, "max_tokens"),
        (Finished(FinishReason.STOP, USAGE, "END"), False, "stop_sequence"),
        (Finished(FinishReason.STOP, USAGE), True, "tool_use"),
        (Finished(FinishReason.LENGTH, USAGE), True, "tool_use"),
        (Finished(FinishReason.ABORT, USAGE), False, "end_turn"),
    ],
)
def test_stop_reason(finished: Finished, tool_calls: bool, expected: str) -> None:
    assert render.stop_reason(finished, tool_calls) == expected


def test_usage_body() -> None:
    # Anthropic splits the prompt: input_tokens excludes what was read from cache.
    assert render.usage_body(Usage(7, 3, 4)) == {
        "input_tokens": 3,
        "output_tokens": 3,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }


# -- full messages ------------------------------------------------------------------


def test_full_text_message() -> None:
    body = full(["Hello", " there", "<|im_end|>"])
    assert body == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "default",
        "content": [{"type": "text", "text": "Hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": render.usage_body(USAGE),
    }


def test_full_message_with_thinking_text_and_tool_use() -> None:
    body = full(TOKENS, make=agent_output)
    thinking, text, tool = body["content"]
    assert thinking == {"type": "thinking", "thinking": "Weather asked.", "signature": ""}
    assert text == {"type": "text", "text": "Let me check."}
    assert tool["type"] == "tool_use" and tool["name"] == "get_weather"
    assert tool["input"] == {"city": "Paris"}  # parsed, not a JSON string
    assert tool["id"].startswith("call_")
    assert body["stop_reason"] == "tool_use"


def test_full_message_only_tool_use_has_no_empty_text_block() -> None:
    body = full(
        ['{"name": "f", "arguments": {"x": [1]}}'],
        make=lambda: OutputProcessor(tools=ForcedToolCall()),
    )
    assert [b["type"] for b in body["content"]] == ["tool_use"]
    assert body["content"][0]["input"] == {"x": [1]}
    assert body["stop_reason"] == "tool_use"


def test_full_message_empty_output_still_has_a_text_block() -> None:
    body = full([])
    assert body["content"] == [{"type": "text", "text": ""}]


def test_full_message_max_tokens() -> None:
    body = full(["Once upon"], Finished(FinishReason.LENGTH, Usage(5, 2)))
    assert (body["stop_reason"], body["stop_sequence"]) == ("max_tokens", None)
    assert body["usage"]["output_tokens"] == 2


def test_full_message_stop_sequence_is_filled() -> None:
    body = full(["Once upon"], Finished(FinishReason.STOP, USAGE, stop_sequence=" a time"))
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", " a time")


def test_full_message_truncated_forced_call_is_text() -> None:
    body = full(
        ['{"name": "f", "argu'],
        Finished(FinishReason.LENGTH, USAGE),
        make=lambda: OutputProcessor(tools=ForcedToolCall()),
    )
    assert body["content"] == [{"type": "text", "text": '{"name": "f", "argu'}]
    assert body["stop_reason"] == "max_tokens"


# -- streaming ------------------------------------------------------------------------


def test_text_stream_event_order_exactly() -> None:
    events = stream([*deltas(["Hel", "lo", " there"]), Finished(FinishReason.LENGTH, USAGE)])
    assert names(events) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"] == "msg_1" and start["model"] == "default" and start["role"] == "assistant"
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == len(REQUEST.prompt_token_ids)
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [d["delta"] for _, d in events[3:6]] == [
        {"type": "text_delta", "text": t} for t in ("Hel", "lo", " there")
    ]
    assert events[6][1] == {"type": "content_block_stop", "index": 0}
    assert events[7][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[7][1]["usage"] == render.usage_body(USAGE)


def test_agent_stream_has_one_block_per_kind_in_order() -> None:
    events = stream([*deltas(TOKENS), DONE], agent_output)
    kinds = names(events)
    assert kinds[:2] == ["message_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    # Each block: start, at least one delta, stop, with nothing else interleaved.
    body = kinds[2:-2]
    for _ in range(3):
        first = body.index("content_block_start")
        stop = body.index("content_block_stop")
        assert first == 0 and stop >= 2, body
        assert set(body[1:stop]) == {"content_block_delta"}
        body = body[stop + 1 :]
    assert body == []
    tool_start = next(d for n, d in events if n == "content_block_start" and d["index"] == 2)
    block = tool_start["content_block"]
    assert block["name"] == "get_weather" and block["id"].startswith("call_")
    assert block["input"] == {}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_blocks_equal_the_full_message() -> None:
    events = stream([*deltas(TOKENS), DONE], agent_output)
    streamed = blocks_from_stream(events)
    whole = full(TOKENS, make=agent_output)["content"]
    assert streamed == [strip(b) for b in whole]


def test_stream_agrees_with_full_message_for_every_split() -> None:
    text = "".join(TOKENS[:-1])
    whole = [strip(b) for b in full([text], make=agent_output)["content"]]
    for cut in range(1, len(text)):
        events = stream([*deltas([text[:cut], text[cut:]]), DONE], agent_output)
        assert blocks_from_stream(events) == whole, f"split at {cut}: {text[:cut]!r}"


def test_stream_stop_sequence() -> None:
    finished = Finished(FinishReason.STOP, USAGE, stop_sequence="END")
    events = stream([*deltas(["a"]), finished])
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_stream_end_turn_and_usage() -> None:
    events = stream([*deltas(["a", "<|im_end|>"]), DONE])
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == USAGE.completion_tokens
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "a"


def test_stream_without_output_still_closes_properly() -> None:
    events = stream([DONE])
    assert names(events) == ["message_start", "ping", "message_delta", "message_stop"]


def test_stream_forced_tool_call_is_one_tool_use_block() -> None:
    chunks = ['{"name": "f", ', '"arguments": {"x": 1}}']
    events = stream([*deltas(chunks), DONE], lambda: OutputProcessor(tools=ForcedToolCall()))
    assert names(events) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert blocks_from_stream(events)[0]["input"] == {"x": 1}
    assert events[3][1]["delta"]["type"] == "input_json_delta"
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_two_tool_calls_are_two_blocks() -> None:
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "b", "arguments": {"k": "v"}}</tool_call>'
    )
    make = lambda: OutputProcessor(None, get_tool_parser("hermes")(None))  # noqa: E731
    blocks = blocks_from_stream(stream([*deltas([text]), DONE], make))
    assert [(b["type"], b["name"], b["input"]) for b in blocks] == [
        ("tool_use", "a", {}),
        ("tool_use", "b", {"k": "v"}),
    ]


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (EngineError(ErrorKind.INTERNAL, "boom"), "api_error"),
        (EngineError(ErrorKind.OVERLOADED, "busy"), "overloaded_error"),
        (Finished(FinishReason.TIMEOUT, USAGE), "timeout_error"),
    ],
)
def test_stream_failure_is_an_error_event(failure: EngineEvent, error_type: str) -> None:
    events = stream([*deltas(["a"]), failure])
    assert names(events)[:2] == ["message_start", "ping"]
    name, data = events[-1]
    assert name == "error"
    assert data["error"]["type"] == error_type and data["error"]["message"]
    assert "message_stop" not in names(events)


def test_stream_asks_the_engine_for_the_given_request() -> None:
    engine = FakeEngine([DONE])

    async def drain() -> None:
        async for _ in render.stream_message(engine, REQUEST, META, text_output, 1.0):  # type: ignore[arg-type]
            pass

    asyncio.run(drain())
    assert engine.requests == [REQUEST]


# -- a loop stopped by the repetition detector ------------------------------------------

LOOP = Finished(FinishReason.STOP, USAGE, None, "repetition_detected", "pattern_loop_len_2")


def test_full_message_of_a_detected_loop_ends_the_turn() -> None:
    body = full(["ab", "ab"], LOOP)
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    assert body["stop_reason_detail"] == "pattern_loop_len_2"
    assert "stop_reason_detail" not in full(["a"])


def test_stream_of_a_detected_loop_ends_the_turn() -> None:
    delta = stream([*deltas(["ab", "ab"]), LOOP])[-2][1]["delta"]
    assert delta == {
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_reason_detail": "pattern_loop_len_2",
    }
    assert "stop_reason_detail" not in stream([*deltas(["a"]), DONE])[-2][1]["delta"]


# -- diagnostics ------------------------------------------------------------------------


def _diagnose(finished: Sequence[Finished]) -> dict[str, Any]:
    return {"prompt_tokens": finished[0].usage.prompt_tokens}


def test_full_message_carries_diagnostics_at_the_top_level() -> None:
    result = ChoiceResult("Hi", [1], [], DONE)
    body = render.full_message(META, result, text_output, _diagnose)
    assert body["diagnostics"] == {"prompt_tokens": USAGE.prompt_tokens}
    assert "diagnostics" not in full(["Hi"])


def test_stream_carries_diagnostics_in_message_delta_only() -> None:
    async def collect() -> list[bytes]:
        engine: Any = FakeEngine([*deltas(["Hi"]), DONE])
        events = render.stream_message(engine, REQUEST, META, text_output, 30.0, _diagnose)
        return [chunk async for chunk in events]

    frames = [json.loads(c.decode().split("data: ", 1)[1]) for c in asyncio.run(collect())]
    carriers = [f for f in frames if "diagnostics" in f]
    assert [f["type"] for f in carriers] == ["message_delta"]
    assert carriers[0]["diagnostics"] == {"prompt_tokens": USAGE.prompt_tokens}
    assert all("diagnostics" not in data for _, data in stream([*deltas(["Hi"]), DONE]))
