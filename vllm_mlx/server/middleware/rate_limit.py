"""Per-client request rate limit (``--rate-limit N``): a sliding 60 s window per client.

The window is the ``limits`` library's moving window in memory: each admitted request
is remembered until 60 s after it arrived, so the (N+1)th request of any 60 s span is
refused and a slot frees exactly when the oldest request in the window turns 60 s old.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_mlx.api.errors import APIError, ErrorType, error_response
from vllm_mlx.server.middleware.auth import sent_keys
from vllm_mlx.server.middleware.paths import RATE_LIMITED_PATHS


class RateLimiter:
    """At most ``per_minute`` requests per client in any 60 s span."""

    def __init__(self, per_minute: int) -> None:
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, not {per_minute}")
        self.per_minute = per_minute
        self.refused = 0  # requests answered with 429 so far (read by the metrics)
        self._item = RateLimitItemPerMinute(per_minute)
        self._window = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, client: str) -> int | None:
        """Count one request of ``client``: None when admitted, else the whole seconds
        (at least 1) until its oldest request in the window leaves it."""
        if self._window.hit(self._item, client):
            return None
        self.refused += 1
        frees_at = self._window.get_window_stats(self._item, client).reset_time
        return max(1, math.ceil(frees_at - time.time()))


def client_id(scope: Scope) -> str:
    """Who sent the request: a hash of its API key (``x-api-key`` or Bearer) when one
    is sent, else the peer address. The raw key is never kept."""
    keys = sent_keys(scope)
    if keys:
        return "key:" + hashlib.sha256(keys[0]).hexdigest()[:32]
    peer = scope.get("client")
    return f"addr:{peer[0] if peer else 'unknown'}"


class RateLimitMiddleware:
    """Answers a client over its limit with 429, ``Retry-After`` and the protocol's body."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in RATE_LIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        retry_after = self.limiter.admit(client_id(scope))
        if retry_after is None:
            await self.app(scope, receive, send)
            return
        error = APIError(
            f"Rate limit reached: {self.limiter.per_minute} requests per minute per client "
            f"(server --rate-limit). Retry in {retry_after} s.",
            ErrorType.RATE_LIMIT,
            code="rate_limit_exceeded",
            retry_after_s=retry_after,
        )
        await error_response(Request(scope), error)(scope, receive, send)
