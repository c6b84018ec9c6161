"""Request plumbing shared by every protocol's routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from vllm_mlx.api.context import request_id_of
from vllm_mlx.api.errors import APIError, from_validation_error

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


async def parse_body(request: Request, model: type[M]) -> M:
    """Strict JSON parsing with OpenAI-shaped errors instead of FastAPI's 422."""
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        raise APIError(f"Content-Type must be application/json, not '{content_type}'", status=415)
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_error(list(exc.errors())) from None


async def until_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Run work, cancelling it (and so aborting generation) if the client leaves."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        watcher.cancel()
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    log.info("client disconnected (499): request %s", request_id_of(request))
    return None


async def watch_stream(stream: AsyncIterator[bytes], request: Request) -> AsyncIterator[bytes]:
    """Pass a response stream through, logging a client that leaves early as a 499."""
    completed = False
    try:
        async for chunk in stream:
            yield chunk
        completed = True
    finally:
        if not completed:
            log.info("client disconnected (499): request %s", request_id_of(request))
