"""Engine results → OpenAI response bodies and SSE chunks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vllm_mlx.api.errors import APIError
from vllm_mlx.api.generation import ChoiceResult, merged_events, raise_for_event
from vllm_mlx.api.output import OutputAccumulator, OutputDelta, OutputProcessor
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


def _finish_reason(finished: Finished, tool_calls: bool) -> str:
    return "tool_calls" if tool_calls else _FINISH[finished.reason]


def _stop_fields(finished: Finished) -> dict[str, Any]:
    """vLLM's stop_reason (the matched stop string), or why the engine stopped early."""
    if finished.stop_reason is not None:
        detail = finished.stop_reason_detail
        return {"stop_reason": finished.stop_reason, "stop_reason_detail": detail}
    if finished.stop_sequence is not None:
        return {"stop_reason": finished.stop_sequence}
    return {}


def _message(out: OutputAccumulator) -> dict[str, Any]:
    calls = out.tool_calls()
    message: dict[str, Any] = {"role": "assistant", "content": out.content_text}
    if calls and not out.content_text:
        message["content"] = None
    if out.reasoning_text is not None:
        message["reasoning"] = message["reasoning_content"] = out.reasoning_text
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


def full_response(
    meta: ResponseMeta,
    results: list[ChoiceResult],
    prompt_count: int,
    want_logprobs: bool,
    echo_texts: Sequence[str] = (),
    make_output: Callable[[], OutputProcessor] = OutputProcessor,
) -> dict[str, Any]:
    choices = []
    for i, r in enumerate(results):
        assert r.finished is not None
        processor, out = make_output(), OutputAccumulator()
        out.add(processor.feed(r.text, len(r.token_ids)))
        out.add(processor.finish())
        finish = _finish_reason(r.finished, processor.saw_tool_call)
        if meta.chat:
            choice: dict[str, Any] = {
                "index": i,
                "message": _message(out),
                "logprobs": chat_logprobs(r.logprobs) if want_logprobs else None,
                "finish_reason": finish,
            }
        else:
            prefix = echo_texts[i] if echo_texts else ""
            choice = {
                "index": i,
                "text": prefix + out.content_text,
                "logprobs": completion_logprobs(r.logprobs, len(prefix)) if want_logprobs else None,
                "finish_reason": finish,
            }
        choice.update(_stop_fields(r.finished))
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
    make_output: Callable[[], OutputProcessor] = OutputProcessor


class _ChoiceStream:
    """Turns one choice's engine events into OpenAI chunk choices."""

    def __init__(self, meta: ResponseMeta, index: int, opts: StreamOptions) -> None:
        self.meta, self.index, self.opts = meta, index, opts
        self.processor = opts.make_output()
        self.text_offset = len(opts.echo_texts[index]) if opts.echo_texts else 0

    def delta(self, event: TokenDelta) -> dict[str, Any] | None:
        out = self.processor.feed(event.text, len(event.token_ids))
        logprobs = event.logprobs if self.opts.want_logprobs else ()
        if out.empty and not logprobs:
            return None
        choice = self._choice(out, logprobs, None)
        self.text_offset += len(out.content)
        return choice

    def final(self, event: Finished) -> dict[str, Any]:
        out = self.processor.finish()
        return self._choice(out, (), _finish_reason(event, self.processor.saw_tool_call), event)

    def _choice(
        self,
        out: OutputDelta,
        logprobs: Sequence[TokenLogprob],
        finish: str | None,
        event: Finished | None = None,
    ) -> dict[str, Any]:
        lp: dict[str, Any] | None = None
        if logprobs:
            chat = self.meta.chat
            lp = (
                chat_logprobs(logprobs) if chat else completion_logprobs(logprobs, self.text_offset)
            )
        choice: dict[str, Any] = {"index": self.index}
        if self.meta.chat:
            choice["delta"] = _chat_delta(out)
        else:
            choice["text"] = out.content
        choice["logprobs"] = lp
        choice["finish_reason"] = finish
        if event is not None:
            choice.update(_stop_fields(event))
        return choice


def _chat_delta(out: OutputDelta) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if out.reasoning:
        delta["reasoning"] = delta["reasoning_content"] = out.reasoning
    if out.content:
        delta["content"] = out.content
    if out.tool_calls:
        calls = []
        for call in out.tool_calls:
            item: dict[str, Any] = {"index": call.index}
            function: dict[str, Any] = {"arguments": call.arguments}
            if call.name is not None:
                item["id"], item["type"] = call.id, "function"
                function["name"] = call.name
            item["function"] = function
            calls.append(item)
        delta["tool_calls"] = calls
    return delta


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
    streams = [_ChoiceStream(meta, i, opts) for i in range(len(requests))]
    if meta.chat:
        for i in range(len(requests)):
            first = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None}  # fmt: skip
            yield sse({**base, "choices": [first], **usage_field})
    for i, text in enumerate(opts.echo_texts):
        echo = {"index": i, "text": text, "logprobs": None, "finish_reason": None}
        yield sse({**base, "choices": [echo], **usage_field})
    try:
        async for index, event in merged_events(engine, requests):
            raise_for_event(event, opts.timeout_s)
            choice: dict[str, Any] | None = None
            if isinstance(event, TokenDelta):
                choice = streams[index].delta(event)
            elif isinstance(event, Finished):
                usages[index] = event.usage
                choice = streams[index].final(event)
            if choice is not None:
                yield sse({**base, "choices": [choice], **usage_field})
    except APIError as exc:
        yield sse(exc.openai_body())
        yield sse("[DONE]")
        return
    if opts.include_usage:
        ordered = [usages[i] for i in sorted(usages)]
        yield sse({**base, "choices": [], "usage": usage_body(ordered, opts.prompt_count)})
    yield sse("[DONE]")


def now() -> int:
    return int(time.time())
