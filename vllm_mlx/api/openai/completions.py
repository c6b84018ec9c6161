"""POST /v1/completions: run a prompt body and render text_completion bodies and chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from vllm_mlx.api.context import ServingContext, new_id
from vllm_mlx.api.diagnostics import diagnostics_fn
from vllm_mlx.api.generation import ChoiceResult
from vllm_mlx.api.openai import adapter, common
from vllm_mlx.api.openai.common import ResponseMeta, StreamOptions
from vllm_mlx.api.openai.protocol import CompletionRequest
from vllm_mlx.api.output import OutputDelta, OutputProcessor
from vllm_mlx.api.requests import generation_requests
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import GenerationRequest, TokenLogprob

OBJECT = "text_completion"  # of full bodies and stream chunks alike


async def create(request: Request, ctx: ServingContext, body: CompletionRequest) -> Response:
    """Tokenize off the event loop, run n sequences per prompt, answer as OpenAI."""
    ctx.check_model(body.model)
    prepared = await asyncio.to_thread(adapter.prepare_completion, body, ctx)
    scope = common.request_scope(request, ctx, body)
    spec = adapter.completion_spec(body, ctx, scope.repetition.mode)
    gen = generation_requests(ctx, scope.request_id, prepared, spec, scope.max_tokens_factor)
    meta = ResponseMeta(new_id("cmpl-"), body.model, common.now())
    want_logprobs, prompts = spec.top_logprobs is not None, len(prepared.prompts)
    echo = echo_texts(body, prepared.prompts, ctx)
    diagnostics = diagnostics_fn(ctx, scope.diagnostics(body, prompts))
    opts = StreamOptions(
        body.include_usage,
        want_logprobs,
        prompts,
        ctx.policy.timeout_s,
        prepared.output,
        diagnostics,
    )
    return await common.respond(
        request,
        ctx,
        body,
        gen,
        stream=lambda: stream_response(ctx.engine, gen, meta, opts, echo),
        full=lambda results: full_response(
            meta, results, prompts, want_logprobs, echo, prepared.output
        ),
        diagnostics=diagnostics,
    )


def echo_texts(
    body: CompletionRequest, prompts: list[list[int]], ctx: ServingContext
) -> tuple[str, ...]:
    """With ``echo``, each choice's prompt text, in choice order."""
    if not body.echo:
        return ()
    return tuple(ctx.tokenizer.decode(p) for p in prompts for _ in range(body.n))


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
    echo: Sequence[str] = (),
    make_output: Callable[[], OutputProcessor] = OutputProcessor,
) -> dict[str, Any]:
    """The text_completion body: one text per choice, after its echoed prompt if asked."""
    choices = []
    for i, r in enumerate(results):
        out, finish = common.final_output(r, make_output)
        assert r.finished is not None
        prefix = echo[i] if echo else ""
        choice: dict[str, Any] = {
            "index": i,
            "text": prefix + out.content_text,
            "logprobs": completion_logprobs(r.logprobs, len(prefix)) if want_logprobs else None,
            "finish_reason": finish,
        }
        choice.update(common.stop_fields(r.finished))
        choices.append(choice)
    return common.response_body(meta, OBJECT, choices, results, prompt_count)


class _TextChoiceStream(common.ChoiceStream):
    """Also tracks the text offset that completion logprobs report."""

    def __init__(self, index: int, opts: StreamOptions, echo: Sequence[str]) -> None:
        super().__init__(index, opts)
        self.text_offset = len(echo[index]) if echo else 0

    def choice(
        self, out: OutputDelta, logprobs: Sequence[TokenLogprob], finish: str | None
    ) -> dict[str, Any]:
        lp = completion_logprobs(logprobs, self.text_offset) if logprobs else None
        self.text_offset += len(out.content)
        return {"index": self.index, "text": out.content, "logprobs": lp, "finish_reason": finish}


def stream_response(
    engine: EngineClient,
    requests: Sequence[GenerationRequest],
    meta: ResponseMeta,
    opts: StreamOptions,
    echo: Sequence[str] = (),
) -> AsyncIterator[bytes]:
    """text_completion SSE: echoed prompts first, when asked."""
    streams = [_TextChoiceStream(i, opts, echo) for i in range(len(requests))]
    opening = [
        {"index": i, "text": text, "logprobs": None, "finish_reason": None}
        for i, text in enumerate(echo)
    ]
    return common.stream_chunks(engine, requests, meta, OBJECT, streams, opening, opts)
