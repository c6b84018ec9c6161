"""What OpenAI chat and text completions share: the run, usage, finish fields and SSE.

``chat.py`` and ``completions.py`` each shape their own choices; this module runs
the engine requests and wraps those choices in the common envelope::

    {"id", "object", "created", "model", "choices": [...], "usage": {...}}
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vllm_mlx.api.context import ServingContext, request_id_of
from vllm_mlx.api.diagnostics import DiagnosticsFn, DiagnosticsRequest, requested_level
from vllm_mlx.api.errors import APIError
from vllm_mlx.api.generation import (
    ChoiceResult,
    collect,
    merged_events,
    raise_for_event,
    request_usage,
)
from vllm_mlx.api.http import until_disconnect, watch_stream
from vllm_mlx.api.openai.protocol import SamplingFields
from vllm_mlx.api.output import OutputAccumulator, OutputDelta, OutputProcessor
from vllm_mlx.api.trust import RepetitionDecision, repetition_mode
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import (
    Finished,
    FinishReason,
    GenerationRequest,
    TokenDelta,
    TokenLogprob,
    Usage,
)

_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.ABORT: "stop",
    FinishReason.TIMEOUT: "length",
}


@dataclass(frozen=True)
class ResponseMeta:
    id: str  # "chatcmpl-…" or "cmpl-…"
    model: str  # the model name the request used
    created: int  # unix seconds


@dataclass(frozen=True)
class RequestScope:
    """Per-request values read once, before the engine requests are built."""

    request_id: str  # the request-id middleware's id
    max_tokens_factor: float  # < 1 while memory pressure cuts max_tokens
    repetition: RepetitionDecision  # the loop detector's mode, and the override's fate

    def diagnostics(self, body: SamplingFields, prompt_count: int) -> DiagnosticsRequest:
        level = requested_level(body.include_diagnostics, body.diagnostics_level)
        return DiagnosticsRequest(level, self.max_tokens_factor, self.repetition, prompt_count)


def request_scope(request: Request, ctx: ServingContext, body: SamplingFields) -> RequestScope:
    request_id = request_id_of(request)
    client = request.client.host if request.client else None
    repetition = repetition_mode(ctx, body.repetition_policy_override, client, request_id)
    return RequestScope(request_id, ctx.max_tokens_factor(), repetition)


async def respond(
    request: Request,
    ctx: ServingContext,
    body: SamplingFields,
    requests: Sequence[GenerationRequest],
    stream: Callable[[], AsyncIterator[bytes]],
    full: Callable[[list[ChoiceResult]], dict[str, Any]],
    diagnostics: DiagnosticsFn | None,
) -> Response:
    """Stream the SSE chunks, or collect the results into one body (with diagnostics)."""
    if body.stream:
        return StreamingResponse(watch_stream(stream(), request), media_type="text/event-stream")
    results = await until_disconnect(request, collect(ctx.engine, requests, ctx.policy.timeout_s))
    if results is None:
        return Response(status_code=499)
    payload = full(results)
    if diagnostics is not None:
        payload["diagnostics"] = diagnostics([r.finished for r in results if r.finished])
    return JSONResponse(payload)


def usage_body(usages: Sequence[Usage], prompt_count: int) -> dict[str, Any]:
    """Prompt tokens count once per prompt, completion tokens once per choice."""
    usage = request_usage(usages, prompt_count)
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def finish_reason(finished: Finished, tool_calls: bool) -> str:
    return "tool_calls" if tool_calls else _FINISH[finished.reason]


def stop_fields(finished: Finished) -> dict[str, Any]:
    """vLLM's stop_reason (the matched stop string), or why the engine stopped early."""
    if finished.stop_reason is not None:
        detail = finished.stop_reason_detail
        return {"stop_reason": finished.stop_reason, "stop_reason_detail": detail}
    if finished.stop_sequence is not None:
        return {"stop_reason": finished.stop_sequence}
    return {}


def final_output(
    result: ChoiceResult, make_output: Callable[[], OutputProcessor]
) -> tuple[OutputAccumulator, str]:
    """A finished choice's parsed output and its finish_reason."""
    assert result.finished is not None
    processor, out = make_output(), OutputAccumulator()
    out.add(processor.feed(result.text, len(result.token_ids)))
    out.add(processor.finish())
    return out, finish_reason(result.finished, processor.saw_tool_call)


def response_body(
    meta: ResponseMeta,
    object_name: str,
    choices: list[dict[str, Any]],
    results: Sequence[ChoiceResult],
    prompt_count: int,
) -> dict[str, Any]:
    usages = [r.finished.usage for r in results if r.finished is not None]
    return {
        "id": meta.id,
        "object": object_name,
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": usage_body(usages, prompt_count),
    }


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


@dataclass(frozen=True)
class StreamOptions:
    include_usage: bool
    want_logprobs: bool
    prompt_count: int
    timeout_s: float
    make_output: Callable[[], OutputProcessor] = OutputProcessor
    diagnostics: DiagnosticsFn | None = None  # None: the stream carries no diagnostics


class ChoiceStream(ABC):
    """Turns one choice's engine events into chunk choices; subclasses shape them."""

    def __init__(self, index: int, opts: StreamOptions) -> None:
        self.index, self.opts = index, opts
        self.processor = opts.make_output()

    def delta(self, event: TokenDelta) -> dict[str, Any] | None:
        out = self.processor.feed(event.text, len(event.token_ids))
        logprobs = event.logprobs if self.opts.want_logprobs else ()
        if out.empty and not logprobs:
            return None
        return self.choice(out, logprobs, None)

    def final(self, event: Finished) -> dict[str, Any]:
        out = self.processor.finish()
        choice = self.choice(out, (), finish_reason(event, self.processor.saw_tool_call))
        choice.update(stop_fields(event))
        return choice

    @abstractmethod
    def choice(
        self, out: OutputDelta, logprobs: Sequence[TokenLogprob], finish: str | None
    ) -> dict[str, Any]:
        """The chunk choice: index, the endpoint's delta, logprobs and finish_reason."""


async def stream_chunks(
    engine: EngineClient,
    requests: Sequence[GenerationRequest],
    meta: ResponseMeta,
    chunk_object: str,
    streams: Sequence[ChoiceStream],
    opening: Sequence[dict[str, Any]],
    opts: StreamOptions,
) -> AsyncIterator[bytes]:
    """SSE chunks as OpenAI sends them; ``opening`` choices go first, errors end as a chunk.

    Diagnostics ride on the closing usage chunk; without ``include_usage``, on the chunk
    that finishes the last choice.
    """
    base = {"id": meta.id, "object": chunk_object, "created": meta.created, "model": meta.model}
    usage_field = {"usage": None} if opts.include_usage else {}
    finished: dict[int, Finished] = {}  # by choice index: usage and diagnostics read that order
    for first in opening:
        yield sse({**base, "choices": [first], **usage_field})
    try:
        async for index, event in merged_events(engine, requests):
            raise_for_event(event, opts.timeout_s)
            choice: dict[str, Any] | None = None
            extra: dict[str, Any] = {}
            if isinstance(event, TokenDelta):
                choice = streams[index].delta(event)
            elif isinstance(event, Finished):
                finished[index] = event
                choice = streams[index].final(event)
                if len(finished) == len(requests) and not opts.include_usage:
                    extra = _diagnostics_field(opts, finished)
            if choice is not None:
                yield sse({**base, "choices": [choice], **usage_field, **extra})
    except APIError as exc:
        yield sse(exc.openai_body())
        yield sse("[DONE]")
        return
    if opts.include_usage:
        usage = usage_body([finished[i].usage for i in sorted(finished)], opts.prompt_count)
        yield sse({**base, "choices": [], "usage": usage, **_diagnostics_field(opts, finished)})
    yield sse("[DONE]")


def _diagnostics_field(opts: StreamOptions, finished: dict[int, Finished]) -> dict[str, Any]:
    if opts.diagnostics is None:
        return {}
    return {"diagnostics": opts.diagnostics([finished[i] for i in sorted(finished)])}


def now() -> int:
    return int(time.time())
