"""Engine results → Responses bodies and SSE events.

A stream runs::

    response.created → response.in_progress → (output item events, see events.py)…
      → response.completed | response.incomplete | response.failed

and its last event carries the same response object a plain request returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from vllm_mlx.api.errors import APIError, ErrorType
from vllm_mlx.api.generation import ChoiceResult, merged_events, raise_for_event
from vllm_mlx.api.openai.responses.events import Event, EventLog, OutputItems
from vllm_mlx.api.openai.responses.protocol import ResponsesRequest
from vllm_mlx.api.output import OutputProcessor
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import Finished, FinishReason, GenerationRequest, TokenDelta, Usage

CountTokens = Callable[[str], int]
OnDone = Callable[[dict[str, Any], list[dict[str, Any]]], None]  # (body, output items)


@dataclass(frozen=True)
class ResponseMeta:
    """What every body of one response repeats, and how its output items are shaped."""

    id: str  # "resp_…"
    created_at: int  # unix seconds
    echo: dict[str, Any]  # the request's settings, as OpenAI echoes them
    namespaces: dict[str, str] = field(default_factory=dict)  # function → its namespace tool
    parallel_tool_calls: bool = True  # False: calls after the first are dropped


def echo_fields(body: ResponsesRequest, request: GenerationRequest) -> dict[str, Any]:
    """The request settings a response object repeats; sampling as actually used."""
    fmt = body.text.format.model_dump(by_alias=True, exclude_none=True) if body.text else None
    reasoning = body.reasoning.model_dump() if body.reasoning else {}
    return {
        "model": body.model,
        "instructions": body.instructions,
        "tools": body.tools or [],
        "tool_choice": body.tool_choice or "auto",
        "parallel_tool_calls": body.parallel_tool_calls,
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
        "max_output_tokens": body.max_output_tokens,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "text": {"format": fmt or {"type": "text"}},
        "metadata": body.metadata or {},
        "user": body.user,
        "store": body.store,
        "truncation": body.truncation or "disabled",
        "background": False,
        "service_tier": "default",
    }


def usage_body(usage: Usage, reasoning_tokens: int) -> dict[str, Any]:
    """OpenAI counts the whole prompt as input; cached tokens are a part of it."""
    return {
        "input_tokens": usage.prompt_tokens,
        # cache_write_tokens counts OpenAI's explicit cache writes; the prefix cache is implicit.
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


# response.error.code is one of OpenAI's fixed values; these are the ones that fit.
_FAILED_CODE = {
    ErrorType.INVALID_REQUEST: "invalid_prompt",
    ErrorType.RATE_LIMIT: "rate_limit_exceeded",
}


def response_body(
    meta: ResponseMeta,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: APIError | None = None,
) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    failed = None
    if error is not None:
        failed = {"code": _FAILED_CODE.get(error.type, "server_error"), "message": error.message}
    done = status in ("completed", "incomplete")
    return {
        "id": meta.id,
        "object": "response",
        "created_at": meta.created_at,
        "status": status,
        "completed_at": int(time.time()) if done else None,
        "error": failed,
        "incomplete_details": incomplete,
        **meta.echo,
        "output": output,
        "usage": usage,
    }


def status_of(finished: Finished) -> str:
    return "incomplete" if finished.reason is FinishReason.LENGTH else "completed"


def reasoning_tokens(items: list[dict[str, Any]], count: CountTokens) -> int:
    text = "".join(p["text"] for i in items if i["type"] == "reasoning" for p in i["content"])
    return count(text) if text else 0


def full_response(
    meta: ResponseMeta,
    result: ChoiceResult,
    make_output: Callable[[], OutputProcessor],
    count: CountTokens,
) -> dict[str, Any]:
    """The response object of a finished generation."""
    assert result.finished is not None
    processor, items = make_output(), _items(EventLog(), meta)
    items.add(processor.feed(result.text, len(result.token_ids)))
    items.add(processor.finish())
    status = status_of(result.finished)
    items.finish(status)
    usage = usage_body(result.finished.usage, reasoning_tokens(items.items, count))
    return response_body(meta, status, items.items, usage)


def _items(log: EventLog, meta: ResponseMeta) -> OutputItems:
    return OutputItems(log, meta.namespaces, meta.parallel_tool_calls)


def now() -> int:
    return int(time.time())


def sse(event: Event) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def stream_response(
    engine: EngineClient,
    request: GenerationRequest,
    meta: ResponseMeta,
    make_output: Callable[[], OutputProcessor],
    timeout_s: float,
    count: CountTokens,
    on_done: OnDone,
) -> AsyncIterator[bytes]:
    """The Responses event stream of one generation; a failure ends it as response.failed.

    ``on_done`` gets the final response object (to store it) before its event is sent.
    """
    log = EventLog()
    items, processor = _items(log, meta), make_output()
    yield sse(log.event("response.created", response=response_body(meta, "in_progress", [])))
    yield sse(log.event("response.in_progress", response=response_body(meta, "in_progress", [])))
    try:
        async for _, ev in merged_events(engine, [request]):
            raise_for_event(ev, timeout_s)
            if isinstance(ev, TokenDelta):
                for event in items.add(processor.feed(ev.text, len(ev.token_ids))):
                    yield sse(event)
            elif isinstance(ev, Finished):
                status = status_of(ev)
                for event in items.add(processor.finish()) + items.finish(status):
                    yield sse(event)
                usage = usage_body(ev.usage, reasoning_tokens(items.items, count))
                body = response_body(meta, status, items.items, usage)
                on_done(body, items.items)
                yield sse(log.event(f"response.{status}", response=body))
    except APIError as exc:
        failed = response_body(meta, "failed", items.items, error=exc)
        yield sse(log.event("response.failed", response=failed))
