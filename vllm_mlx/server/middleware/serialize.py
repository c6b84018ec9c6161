"""One tracked inference request at a time, end to end, while serialization is on.

On under ``--deterministic``, and while the batch-divergence monitor's action
``serialize`` is in force. A request holds its turn until its response has sent
its last byte (a stream included), so no two ever share the engine's batch.
Requests already running when it switches on finish as they are; only requests
that arrive while it is on wait for a turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_mlx.server.middleware.paths import INFERENCE_PATHS


class SerializeMiddleware:
    def __init__(self, app: ASGIApp, active: Callable[[], bool]) -> None:
        """``active`` is asked as each request arrives."""
        self.app = app
        self.active = active
        self._turn = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in INFERENCE_PATHS or not self.active():
            await self.app(scope, receive, send)
            return
        async with self._turn:  # held through the whole response, not just its headers
            await self.app(scope, receive, send)
