"""Counts tracked inference requests in flight (runtime.active/peak_concurrency)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_mlx.server.middleware.paths import INFERENCE_PATHS


@dataclass
class ConcurrencyCounter:
    active: int = 0
    peak: int = 0


class ConcurrencyMiddleware:
    """Increments on entry to a tracked route, decrements when the response ends."""

    def __init__(self, app: ASGIApp, counter: ConcurrencyCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in INFERENCE_PATHS:
            await self.app(scope, receive, send)
            return
        self.counter.active += 1
        self.counter.peak = max(self.counter.peak, self.counter.active)
        try:
            await self.app(scope, receive, send)
        finally:
            self.counter.active -= 1
