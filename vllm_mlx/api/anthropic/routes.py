"""Thin Anthropic routes: /v1/messages and /v1/messages/count_tokens."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vllm_mlx.api.anthropic import adapter, render
from vllm_mlx.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from vllm_mlx.api.context import new_id, request_id_of, serving
from vllm_mlx.api.generation import collect
from vllm_mlx.api.http import parse_body, until_disconnect, watch_stream

router = APIRouter()


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    ctx = serving(request)
    body = await parse_body(request, MessagesRequest)
    ctx.check_model(body.model)
    prepared = await asyncio.to_thread(adapter.prepare_messages, body, ctx)
    gen = adapter.generation_request(request_id_of(request), prepared, body, ctx)
    meta = render.MessageMeta(new_id("msg_"), body.model)
    if body.stream:
        events = render.stream_message(ctx.engine, gen, meta, prepared.output, ctx.policy.timeout_s)
        return StreamingResponse(watch_stream(events, request), media_type="text/event-stream")
    results = await until_disconnect(request, collect(ctx.engine, [gen], ctx.policy.timeout_s))
    if results is None:
        return Response(status_code=499)
    return JSONResponse(render.full_message(meta, results[0], prepared.output))


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> dict[str, Any]:
    ctx = serving(request)
    body = await parse_body(request, CountTokensRequest)
    ctx.check_model(body.model)
    return {"input_tokens": await asyncio.to_thread(adapter.count_tokens, body, ctx)}
