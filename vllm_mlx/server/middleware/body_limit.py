"""Request body limit (``--max-request-mb``): larger bodies get 413.

A ``Content-Length`` over the limit is refused before any of the body is read. A body
of unknown length (chunked) is counted as it arrives and refused once it passes the
limit; the app's own answer to the cut-off body is then dropped.
"""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllm_mlx.api.errors import APIError, ErrorType, error_response

MIB = 1024 * 1024


class _BodyTooLarge(APIError):
    """Raised into the app by ``receive`` once the body passes the limit (an APIError,
    so the app's handlers log it as the client's fault, not as a server error)."""

    def __init__(self) -> None:
        super().__init__("request body over the limit", status=413)


class BodyLimitMiddleware:
    """Refuses a request body over ``max_mb`` MiB with 413 ``request_too_large``."""

    def __init__(self, app: ASGIApp, max_mb: float) -> None:
        self.app = app
        self.max_mb = max_mb
        self.max_bytes = int(max_mb * MIB)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        refused = started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # whatever the app answers to the cut-off body
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if refused and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = APIError(
            f"Request body is larger than the server's limit of {self.max_mb:g} MB "
            "(server --max-request-mb).",
            ErrorType.INVALID_REQUEST,
            code="request_too_large",
            status=413,
        )
        await error_response(Request(scope), error)(scope, receive, send)


def _declared_length(scope: Scope) -> int:
    """The ``Content-Length`` header, or 0 when absent (the server has validated it)."""
    raw = dict(scope["headers"]).get(b"content-length", b"")
    return int(raw) if raw.isdigit() else 0
