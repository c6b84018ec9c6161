"""Engine results → OpenAI response bodies and SSE chunks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from vllm_mlx.api.errors import APIError
from vllm_mlx.api.generation import ChoiceResult, merged_events, raise_for_event
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
    id: str
    model: str
    created: int
    chat: bool  # chat.completion or text_completion shapes

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"


def usage_body(usages: Sequence[Usage], prompt_count: int) -> dict[str, Any]:
    """Prompt tokens count once per prompt, completion tokens once per choice."""
    per_prompt = len(usages) // max(1, prompt_count)
    prompt = sum(u.prompt_tokens for u in usages[::per_prompt]) if usages else 0
    cached = sum(u.cached_tokens for u in usages[::per_prompt]) if usages else 0
    completion = sum(u.completion_tokens for u in usages)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": _bytes(lp.token),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": _bytes(t.token)}
                    for t in lp.top
                ],
            }
            for lp in items
        ]
    }


def completion_logprobs(items: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for lp in items:
        offsets.append(pos)
        pos += len(lp.token)
    return {
        "tokens": [lp.token for lp in items],
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in items],
        "text_offset": offsets,
    }


def full_response(
    meta: ResponseMeta,
    results: list[ChoiceResult],
    prompt_count: int,
    want_logprobs: bool,
    echo_texts: Sequence[str] = (),
) -> dict[str, Any]:
    choices = []
    for i, r in enumerate(results):
        assert r.finished is not None
        finish = _FINISH[r.finished.reason]
        if meta.chat:
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": chat_logprobs(r.logprobs) if want_logprobs else None,
                "finish_reason": finish,
            }
        else:
            prefix = echo_texts[i] if echo_texts else ""
            choice = {
                "index": i,
                "text": prefix + r.text,
                "logprobs": completion_logprobs(r.logprobs, len(prefix)) if want_logprobs else None,
                "finish_reason": finish,
            }
        if r.finished.stop_sequence is not None:
            choice["stop_reason"] = r.finished.stop_sequence
        choices.append(choice)
    usages = [r.finished.usage for r in results if r.finished is not None]
    return {
        "id": meta.id,
        "object": meta.object,
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
    echo_texts: tuple[str, ...] = ()


async def stream_response(
    engine: EngineClient,
    requests: Sequence[GenerationRequest],
    meta: ResponseMeta,
    opts: StreamOptions,
) -> AsyncIterator[bytes]:
    """SSE chunks as OpenAI sends them; errors become an error chunk."""
    chunk_object = "chat.completion.chunk" if meta.chat else "text_completion"
    base = {"id": meta.id, "object": chunk_object, "created": meta.created, "model": meta.model}
    usage_field = {"usage": None} if opts.include_usage else {}
    usages: dict[int, Usage] = {}  # by choice index: usage_body relies on that order
    offsets = [len(t) for t in opts.echo_texts] or [0] * len(requests)
    if meta.chat:
        for i in range(len(requests)):
            first = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None}  # fmt: skip
            yield sse({**base, "choices": [first], **usage_field})
    for i, text in enumerate(opts.echo_texts):
        yield sse(
            {**base, "choices": [_text_choice(meta, i, text, None, None, opts)], **usage_field}
        )
    try:
        async for index, event in merged_events(engine, requests):
            raise_for_event(event, opts.timeout_s)
            if isinstance(event, TokenDelta):
                if not event.text and not (opts.want_logprobs and event.logprobs):
                    continue
                choice = _text_choice(
                    meta, index, event.text, event.logprobs, None, opts, offsets[index]
                )
                offsets[index] += len(event.text)
            elif isinstance(event, Finished):
                usages[index] = event.usage
                choice = _text_choice(meta, index, "", (), event, opts)
            else:
                continue
            yield sse({**base, "choices": [choice], **usage_field})
    except APIError as exc:
        yield sse(exc.openai_body())
        yield sse("[DONE]")
        return
    if opts.include_usage:
        ordered = [usages[i] for i in sorted(usages)]
        yield sse({**base, "choices": [], "usage": usage_body(ordered, opts.prompt_count)})
    yield sse("[DONE]")


def _text_choice(
    meta: ResponseMeta,
    index: int,
    text: str,
    logprobs: Sequence[TokenLogprob] | None,
    finished: Finished | None,
    opts: StreamOptions,
    text_offset: int = 0,
) -> dict[str, Any]:
    lp: dict[str, Any] | None = None
    if opts.want_logprobs and logprobs:
        lp = chat_logprobs(logprobs) if meta.chat else completion_logprobs(logprobs, text_offset)
    choice: dict[str, Any] = {"index": index}
    if meta.chat:
        choice["delta"] = {"content": text} if text else {}
    else:
        choice["text"] = text
    choice["logprobs"] = lp
    choice["finish_reason"] = _FINISH[finished.reason] if finished else None
    if finished is not None and finished.stop_sequence is not None:
        choice["stop_reason"] = finished.stop_sequence
    return choice


def now() -> int:
    return int(time.time())
