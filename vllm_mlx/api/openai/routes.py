"""Thin OpenAI routes: parse, adapt, run, render."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vllm_mlx.api.context import ServingContext, new_id, request_id_of, serving
from vllm_mlx.api.diagnostics import diagnostics_body
from vllm_mlx.api.errors import OpenAIErrorBody
from vllm_mlx.api.generation import PreparedPrompt, collect
from vllm_mlx.api.http import parse_body, until_disconnect, watch_stream
from vllm_mlx.api.openai import adapter, render
from vllm_mlx.api.openai.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChunk,
    CompletionRequest,
)
from vllm_mlx.api.openapi import json_body, response_docs
from vllm_mlx.api.trust import repetition_mode

log = logging.getLogger(__name__)
router = APIRouter()


async def _run(
    request: Request,
    ctx: ServingContext,
    prepare: Callable[[], PreparedPrompt],
    body: ChatCompletionRequest | CompletionRequest,
    chat: bool,
) -> Response:
    ctx.check_model(body.model)
    prepared = await asyncio.to_thread(prepare)
    prompts = prepared.prompts
    logprobs = _logprobs_setting(body)
    requested_max = getattr(body, "max_completion_tokens", None) or body.max_tokens
    request_id = request_id_of(request)
    factor = ctx.max_tokens_factor()
    client = request.client.host if request.client else None
    repetition = repetition_mode(ctx, body.repetition_policy_override, client, request_id)
    gen = adapter.generation_requests(
        request_id, prepared, body, ctx, requested_max, logprobs, factor, repetition
    )
    meta = render.ResponseMeta(
        new_id("chatcmpl-" if chat else "cmpl-"), body.model, render.now(), chat
    )
    echo = _echo_texts(body, prompts, ctx)
    if body.stream:
        opts = render.StreamOptions(
            body.include_usage,
            logprobs is not None,
            len(prompts),
            ctx.policy.timeout_s,
            echo,
            prepared.output,
        )
        stream = render.stream_response(ctx.engine, gen, meta, opts)
        return StreamingResponse(watch_stream(stream, request), media_type="text/event-stream")
    results = await until_disconnect(request, collect(ctx.engine, gen, ctx.policy.timeout_s))
    if results is None:
        return Response(status_code=499)
    payload = render.full_response(
        meta, results, len(prompts), logprobs is not None, echo, prepared.output
    )
    if body.include_diagnostics or factor < 1.0:  # a cut max_tokens is never silent
        usage = payload["usage"]
        payload["diagnostics"] = diagnostics_body(
            ctx,
            body.diagnostics_level,
            usage["prompt_tokens"],
            usage["completion_tokens"],
            factor,
        )
    return JSONResponse(payload)


def _logprobs_setting(body: ChatCompletionRequest | CompletionRequest) -> int | None:
    """Alternatives per position, or None when logprobs are off."""
    if isinstance(body, ChatCompletionRequest):
        return (body.top_logprobs or 0) if body.logprobs else None
    return body.logprobs


def _echo_texts(body: Any, prompts: list[list[int]], ctx: ServingContext) -> tuple[str, ...]:
    if not getattr(body, "echo", False):
        return ()
    return tuple(ctx.tokenizer.decode(p) for p in prompts for _ in range(body.n))


@router.post(
    "/v1/chat/completions",
    openapi_extra=json_body(ChatCompletionRequest),
    responses=response_docs(ChatCompletion, OpenAIErrorBody, ChatCompletionChunk),
)
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions."""
    ctx = serving(request)
    body = await parse_body(request, ChatCompletionRequest)
    return await _run(request, ctx, lambda: adapter.prepare_chat(body, ctx), body, chat=True)


@router.post(
    "/v1/completions",
    openapi_extra=json_body(CompletionRequest),
    responses=response_docs(Completion, OpenAIErrorBody, CompletionChunk),
)
async def completions(request: Request) -> Response:
    """OpenAI text completions."""
    ctx = serving(request)
    body = await parse_body(request, CompletionRequest)
    return await _run(request, ctx, lambda: adapter.prepare_completion(body, ctx), body, chat=False)
