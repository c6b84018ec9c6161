"""Thin Responses routes: POST /v1/responses, GET and DELETE /v1/responses/{id}."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vllm_mlx.api.context import ServingContext, new_id, request_id_of, serving
from vllm_mlx.api.errors import OpenAIErrorBody
from vllm_mlx.api.generation import collect
from vllm_mlx.api.http import parse_body, until_disconnect, watch_stream
from vllm_mlx.api.openai.responses import adapter, render
from vllm_mlx.api.openai.responses.items import namespaces, template_messages
from vllm_mlx.api.openai.responses.protocol import (
    DeletedResponse,
    ResponsesRequest,
    ResponseStreamEvent,
)
from vllm_mlx.api.openai.responses.protocol import (
    Response as ResponseDoc,
)
from vllm_mlx.api.openai.responses.store import (
    StoredResponse,
    not_found,
    response_store,
)
from vllm_mlx.api.openapi import json_body, response_docs

router = APIRouter()


def _history(request: Request, body: ResponsesRequest) -> tuple[dict[str, Any], ...]:
    if body.previous_response_id is None:
        return ()
    stored = response_store(request).get(body.previous_response_id)
    if stored is None:
        raise not_found(body.previous_response_id, "previous_response_id")
    return stored.conversation


def _token_counter(ctx: ServingContext) -> render.CountTokens:
    return lambda text: len(ctx.tokenizer.encode(text, add_special_tokens=False))


@router.post(
    "/v1/responses",
    openapi_extra=json_body(ResponsesRequest),
    responses=response_docs(ResponseDoc, OpenAIErrorBody, ResponseStreamEvent),
)
async def create_response(request: Request) -> Response:
    """OpenAI Responses (function tools; no hosted tools)."""
    ctx = serving(request)
    body = await parse_body(request, ResponsesRequest)
    ctx.check_model(body.model)
    convo = adapter.conversation(body, _history(request, body))
    prepared = await asyncio.to_thread(adapter.prepare, body, convo, ctx)
    factor = ctx.max_tokens_factor()
    gen = adapter.generation_request(request_id_of(request), prepared, body, ctx, factor)
    echo = render.echo_fields(body, gen)
    meta = render.ResponseMeta(
        new_id("resp_"), render.now(), echo, namespaces(body.tools), body.parallel_tool_calls
    )
    store = response_store(request)

    def keep(payload: dict[str, Any], output: list[dict[str, Any]]) -> None:
        if body.store:  # the conversation grows by this turn's output
            conversation = template_messages(output, convo.new_messages)
            store.put(meta.id, StoredResponse(payload, tuple(conversation)))

    count = _token_counter(ctx)
    if body.stream:
        events = render.stream_response(
            ctx.engine, gen, meta, prepared.output, ctx.policy.timeout_s, count, keep
        )
        return StreamingResponse(watch_stream(events, request), media_type="text/event-stream")
    results = await until_disconnect(request, collect(ctx.engine, [gen], ctx.policy.timeout_s))
    if results is None:
        return Response(status_code=499)
    payload = render.full_response(meta, results[0], prepared.output, count)
    keep(payload, payload["output"])
    return JSONResponse(payload)


@router.get(
    "/v1/responses/{response_id}",
    response_model=None,
    responses=response_docs(ResponseDoc, OpenAIErrorBody),
)
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    """A stored response (``store`` was true); 404 once evicted or deleted."""
    stored = response_store(request).get(response_id)
    if stored is None:
        raise not_found(response_id)
    return stored.body


@router.delete(
    "/v1/responses/{response_id}",
    response_model=None,
    responses=response_docs(DeletedResponse, OpenAIErrorBody),
)
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    if not response_store(request).delete(response_id):
        raise not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
