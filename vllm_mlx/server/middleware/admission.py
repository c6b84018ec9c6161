"""Admission of new inference requests: each gate may refuse one with a 503.

Gates (draining, memory pressure, a full queue) live with what they watch; this
middleware asks them in order before a request reaches its route, so a refused
request costs no parsing or tokenizing. Running requests are never affected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_mlx.api.errors import APIError, ErrorType, error_response
from vllm_mlx.server.middleware.paths import INFERENCE_PATHS

Gate = Callable[[], APIError | None]


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, gates: Sequence[Gate]) -> None:
        self.app = app
        self.gates = tuple(gates)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in INFERENCE_PATHS:
            for gate in self.gates:
                error = gate()
                if error is not None:
                    await error_response(Request(scope), error)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def queue_gate(max_queue: int, waiting: Callable[[], int]) -> Gate:
    """503 once ``max_queue`` requests wait for a sequence slot (--max-queue)."""

    def gate() -> APIError | None:
        n = waiting()
        if n < max_queue:
            return None
        return APIError(
            f"The server's queue is full ({n} requests waiting, --max-queue {max_queue}); "
            "retry later.",
            ErrorType.OVERLOADED,
            code="queue_full",
            retry_after_s=1,
        )

    return gate
