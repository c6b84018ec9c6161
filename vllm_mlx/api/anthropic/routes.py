"""Thin Anthropic routes: /v1/messages and /v1/messages/count_tokens."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vllm_mlx.api import media
from vllm_mlx.api.anthropic import adapter, render
from vllm_mlx.api.anthropic.protocol import (
    CountTokensRequest,
    CountTokensResponse,
    MessageResponse,
    MessagesRequest,
    StreamEvent,
)
from vllm_mlx.api.context import new_id, request_id_of, serving
from vllm_mlx.api.diagnostics import DiagnosticsRequest, diagnostics_fn, requested_level
from vllm_mlx.api.errors import AnthropicErrorBody
from vllm_mlx.api.generation import collect
from vllm_mlx.api.http import parse_body, until_disconnect, watch_stream
from vllm_mlx.api.openapi import json_body, response_docs

router = APIRouter()


@router.post(
    "/v1/messages",
    openapi_extra=json_body(MessagesRequest),
    responses=response_docs(MessageResponse, AnthropicErrorBody, StreamEvent),
)
async def messages(request: Request) -> Response:
    """Anthropic Messages."""
    ctx = serving(request)
    body = await parse_body(request, MessagesRequest)
    ctx.check_model(body.model)
    images = await media.load_images(adapter.image_sources(body), ctx)
    prepared = await asyncio.to_thread(adapter.prepare_messages, body, ctx, images)
    factor = ctx.max_tokens_factor()
    gen = adapter.generation_request(request_id_of(request), prepared, body, ctx, factor)
    meta = render.MessageMeta(new_id("msg_"), body.model)
    level = requested_level(body.include_diagnostics, body.diagnostics_level)
    asked = DiagnosticsRequest(level, factor, visual_inputs=len(images))
    diagnostics = diagnostics_fn(ctx, asked)
    if body.stream:
        events = render.stream_message(
            ctx.engine, gen, meta, prepared.output, ctx.policy.timeout_s, diagnostics
        )
        return StreamingResponse(watch_stream(events, request), media_type="text/event-stream")
    results = await until_disconnect(request, collect(ctx.engine, [gen], ctx.policy.timeout_s))
    if results is None:
        return Response(status_code=499)
    return JSONResponse(render.full_message(meta, results[0], prepared.output, diagnostics))


@router.post(
    "/v1/messages/count_tokens",
    response_model=None,
    openapi_extra=json_body(CountTokensRequest),
    responses=response_docs(CountTokensResponse, AnthropicErrorBody),
)
async def count_tokens(request: Request) -> dict[str, Any]:
    """Anthropic token counting: the prompt's tokens as /v1/messages would send it."""
    ctx = serving(request)
    body = await parse_body(request, CountTokensRequest)
    ctx.check_model(body.model)
    images = await media.load_images(adapter.image_sources(body), ctx)
    return {"input_tokens": await asyncio.to_thread(adapter.count_tokens, body, ctx, images)}
