"""Thin OpenAI routes: parse the body, hand it to its endpoint module."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vllm_mlx.api.context import serving
from vllm_mlx.api.errors import OpenAIErrorBody
from vllm_mlx.api.http import parse_body
from vllm_mlx.api.openai import chat, embeddings
from vllm_mlx.api.openai import completions as text_completions
from vllm_mlx.api.openai.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChunk,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
)
from vllm_mlx.api.openapi import json_body, response_docs

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    openapi_extra=json_body(ChatCompletionRequest),
    responses=response_docs(ChatCompletion, OpenAIErrorBody, ChatCompletionChunk),
)
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions."""
    ctx = serving(request)
    body = await parse_body(request, ChatCompletionRequest)
    return await chat.create(request, ctx, body)


@router.post(
    "/v1/completions",
    openapi_extra=json_body(CompletionRequest),
    responses=response_docs(Completion, OpenAIErrorBody, CompletionChunk),
)
async def completions(request: Request) -> Response:
    """OpenAI text completions."""
    ctx = serving(request)
    body = await parse_body(request, CompletionRequest)
    return await text_completions.create(request, ctx, body)


@router.post(
    "/v1/embeddings",
    openapi_extra=json_body(EmbeddingRequest),
    responses=response_docs(EmbeddingList, OpenAIErrorBody),
)
async def create_embeddings(request: Request) -> Response:
    """OpenAI embeddings, from the embedding model (vllm_mlx/embeddings/)."""
    service = embeddings.embedding_service(request)
    body = await parse_body(request, EmbeddingRequest)
    return await embeddings.create(service, body, request.app.state.timeout_s)
