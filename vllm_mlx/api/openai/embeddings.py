"""``POST /v1/embeddings``: tokenize, check the window, embed on the worker, render.

Vectors come back as JSON floats or, with ``encoding_format: "base64"``, as base64 of
little-endian float32 (what OpenAI sends and its SDK decodes by default). A text over
the model's window is a 400 naming it, unless ``truncate: true`` cuts it to the window
as sentence-transformers does. ``dimensions`` is honoured only for models whose config
says they are Matryoshka-trained (``is_matryoshka`` / ``matryoshka_dimensions``); a
value equal to the model's size is always accepted.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from vllm_mlx.api.errors import APIError, ErrorType, InvalidRequest, ModelNotFound, RequestTimedOut
from vllm_mlx.api.openai.protocol import EmbeddingRequest
from vllm_mlx.backend.errors import LoaderError
from vllm_mlx.embeddings.loader import EmbeddingModel
from vllm_mlx.embeddings.pooling import truncate_dimensions
from vllm_mlx.embeddings.service import EmbeddingService


def embedding_service(request: Request) -> EmbeddingService:
    service: EmbeddingService | None = getattr(request.app.state, "embeddings", None)
    if service is None:
        raise _unavailable("embeddings are not enabled on this server")
    if service.unavailable is not None:
        raise _unavailable(service.unavailable)
    return service


def _unavailable(message: str) -> APIError:
    return APIError(message, ErrorType.SERVER, code="embeddings_unavailable", status=503)


async def create(
    service: EmbeddingService, body: EmbeddingRequest, timeout_s: float
) -> JSONResponse:
    """The embeddings of ``body``'s inputs, as OpenAI's list."""
    if body.model not in service.names:
        raise ModelNotFound(body.model, service.names)
    try:
        model = await service.worker.model()
    except LoaderError as exc:
        raise _unavailable(str(exc)) from exc
    _check_dimensions(model, body.dimensions)
    tokens = await asyncio.to_thread(tokenize, model, body)
    try:
        vectors = await asyncio.wait_for(service.worker.embed(tokens), timeout_s)
    except TimeoutError:
        raise RequestTimedOut(timeout_s) from None
    if body.dimensions is not None and body.dimensions != model.dimensions:
        vectors = list(truncate_dimensions(np.stack(vectors), body.dimensions))
    used = sum(len(ids) for ids in tokens)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "model": body.model if body.model != "default" else service.model_id,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
    )


def _check_dimensions(model: EmbeddingModel, dimensions: int | None) -> None:
    if dimensions is None or dimensions == model.dimensions:
        return
    if not model.matryoshka:
        raise InvalidRequest(
            f"{model.model_id} returns {model.dimensions} dimensions and is not "
            "Matryoshka-trained, so it cannot shorten them: omit dimensions",
            param="dimensions",
        )
    if dimensions > model.dimensions:
        raise InvalidRequest(
            f"dimensions must be at most {model.dimensions} for {model.model_id}",
            param="dimensions",
        )


def tokenize(model: EmbeddingModel, body: EmbeddingRequest) -> list[list[int]]:
    """Token ids per input, checked against the window and the vocabulary."""
    raw = body.input
    if isinstance(raw, str):
        raw = [raw]
    if all(isinstance(item, str) for item in raw):
        texts: list[str] = raw  # type: ignore[assignment]
        tokens = [e.ids for e in model.tokenizer.encode_batch(texts)]
    elif all(isinstance(item, int) for item in raw):
        tokens = [list(raw)]  # type: ignore[arg-type]
    else:
        tokens = [list(item) for item in raw]  # type: ignore[arg-type]
        texts = []
    vocab = model.tokenizer.get_vocab_size()
    for index, ids in enumerate(tokens):
        if max(ids) >= vocab:
            raise InvalidRequest(
                f"input[{index}] has token id {max(ids)}, outside the vocabulary (0..{vocab - 1})",
                param="input",
            )
        if len(ids) <= model.max_tokens:
            continue
        if not body.truncate:
            raise InvalidRequest(
                f"input[{index}] has {len(ids)} tokens, more than {model.model_id}'s window of "
                f"{model.max_tokens} tokens; shorten it or send truncate: true",
                param="input",
                code="context_length_exceeded",
            )
        tokens[index] = (
            model.truncating.encode(texts[index]).ids if texts else ids[: model.max_tokens]
        )
    return tokens


def _encode(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
