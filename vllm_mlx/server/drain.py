"""Graceful drain on SIGTERM / SIGINT: stop admitting, let running requests finish.

While draining, new inference requests get 503 with Retry-After and /health
reports ``draining``, so a load balancer moves traffic elsewhere. Requests still
running when the grace period ends get a final error event (or a 503 body).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from vllm_mlx.api.errors import APIError, ErrorType

log = logging.getLogger(__name__)

POLL_S = 0.05
FLUSH_S = 5.0  # after failing the rest, how long their last events may take to leave
RETRY_AFTER_S = 5


class Drain:
    """The draining flag and its gate."""

    def __init__(self) -> None:
        self.since: float | None = None  # time.monotonic() the drain began

    @property
    def draining(self) -> bool:
        return self.since is not None

    def refusal(self) -> APIError | None:
        if self.since is None:
            return None
        return APIError(
            "The server is shutting down and admits no new requests; retry later.",
            ErrorType.OVERLOADED,
            code="shutting_down",
            retry_after_s=RETRY_AFTER_S,
        )

    async def run(
        self, grace_s: float, in_flight: Callable[[], int], fail_running: Callable[[str], None]
    ) -> None:
        """Wait up to ``grace_s`` for in-flight requests; then end the rest with an error."""
        self.since = time.monotonic()
        n = in_flight()
        log.info("draining: %d requests in flight, up to %g s to finish", n, grace_s)
        deadline = self.since + grace_s
        while in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        left = in_flight()
        if left:
            log.warning("drain: grace period over; ending %d requests with an error", left)
            fail_running("the server is shutting down")
            flush_until = time.monotonic() + FLUSH_S
            while in_flight() and time.monotonic() < flush_until:
                await asyncio.sleep(POLL_S)
        log.info("drained in %.1f s; shutting down", time.monotonic() - self.since)
