"""Engine results → Anthropic message bodies and SSE events.

Streaming follows Anthropic's event order::

    message_start → ping → (content_block_start → content_block_delta… → content_block_stop)…
      → message_delta → message_stop

with one block per kind of output in the order it appears: thinking, text, and
one tool_use block per call (its input streamed as input_json_delta).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from vllm_mlx.api.anthropic.adapter import tool_input
from vllm_mlx.api.diagnostics import DiagnosticsFn
from vllm_mlx.api.errors import APIError
from vllm_mlx.api.generation import ChoiceResult, merged_events, raise_for_event
from vllm_mlx.api.output import OutputAccumulator, OutputDelta, OutputProcessor
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import Finished, FinishReason, GenerationRequest, TokenDelta, Usage


@dataclass(frozen=True)
class MessageMeta:
    id: str
    model: str


def stop_reason(finished: Finished, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_use"
    if finished.stop_sequence is not None:
        return "stop_sequence"
    if finished.reason is FinishReason.LENGTH:
        return "max_tokens"
    return "end_turn"


def _detail(finished: Finished) -> dict[str, str]:
    """Why the engine ended the turn early (a detected loop), beside end_turn."""
    detail = finished.stop_reason_detail
    return {"stop_reason_detail": detail} if detail is not None else {}


def usage_body(usage: Usage) -> dict[str, int]:
    """Anthropic splits the prompt: fresh input tokens plus tokens read from cache."""
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def full_message(
    meta: MessageMeta,
    result: ChoiceResult,
    make_output: Callable[[], OutputProcessor],
    diagnostics: DiagnosticsFn | None = None,
) -> dict[str, Any]:
    """The message body; ``diagnostics``, when asked, adds a top-level ``diagnostics``."""
    assert result.finished is not None
    processor, out = make_output(), OutputAccumulator()
    out.add(processor.feed(result.text, len(result.token_ids)))
    out.add(processor.finish())
    content: list[dict[str, Any]] = []
    if out.reasoning_text:
        content.append({"type": "thinking", "thinking": out.reasoning_text, "signature": ""})
    calls = out.tool_calls()
    if out.content_text or not (calls or content):
        content.append({"type": "text", "text": out.content_text})
    for call in calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name}
        content.append({**block, "input": tool_input(call.arguments)})
    finished = result.finished
    extra = {"diagnostics": diagnostics([finished])} if diagnostics is not None else {}
    return {
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": stop_reason(finished, bool(calls)),
        "stop_sequence": finished.stop_sequence,
        **_detail(finished),
        "usage": usage_body(finished.usage),
        **extra,
    }


def event(kind: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps({"type": kind, **payload}, ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n".encode()


class _Blocks:
    """Opens and closes content blocks as the kind of output changes."""

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None  # thinking, text or tool_use

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self.close()
        self.index += 1
        self.kind = kind
        out.append(event("content_block_start", {"index": self.index, "content_block": block}))
        return out

    def close(self) -> list[bytes]:
        if self.kind is None:
            return []
        self.kind = None
        return [event("content_block_stop", {"index": self.index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self.index, "delta": delta})

    def emit(self, out: OutputDelta) -> list[bytes]:
        events: list[bytes] = []
        if out.reasoning:
            if self.kind != "thinking":
                events += self._open("thinking", {"type": "thinking", "thinking": ""})
            events.append(self._delta({"type": "thinking_delta", "thinking": out.reasoning}))
        if out.content:
            if self.kind != "text":
                events += self._open("text", {"type": "text", "text": ""})
            events.append(self._delta({"type": "text_delta", "text": out.content}))
        for call in out.tool_calls:
            if call.name is not None:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": {},
                }
                events += self._open("tool_use", block)
            if call.arguments:
                events.append(
                    self._delta({"type": "input_json_delta", "partial_json": call.arguments})
                )
        return events


async def stream_message(
    engine: EngineClient,
    request: GenerationRequest,
    meta: MessageMeta,
    make_output: Callable[[], OutputProcessor],
    timeout_s: float,
    diagnostics: DiagnosticsFn | None = None,
) -> AsyncIterator[bytes]:
    """Anthropic SSE events for one generation; failures become an error event.

    ``diagnostics``, when asked, adds ``diagnostics`` to the message_delta event.
    """
    start: dict[str, Any] = {
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": len(request.prompt_token_ids), "output_tokens": 0},
    }
    yield event("message_start", {"message": start})
    yield event("ping", {})
    processor, blocks = make_output(), _Blocks()
    try:
        async for _, ev in merged_events(engine, [request]):
            raise_for_event(ev, timeout_s)
            if isinstance(ev, TokenDelta):
                for chunk in blocks.emit(processor.feed(ev.text, len(ev.token_ids))):
                    yield chunk
            elif isinstance(ev, Finished):
                for chunk in blocks.emit(processor.finish()) + blocks.close():
                    yield chunk
                delta = {
                    "stop_reason": stop_reason(ev, processor.saw_tool_call),
                    "stop_sequence": ev.stop_sequence,
                    **_detail(ev),
                }
                closing = {"delta": delta, "usage": usage_body(ev.usage)}
                if diagnostics is not None:
                    closing["diagnostics"] = diagnostics([ev])
                yield event("message_delta", closing)
                yield event("message_stop", {})
    except APIError as exc:
        yield event("error", {"error": exc.anthropic_body()["error"]})
