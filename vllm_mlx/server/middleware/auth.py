"""API-key check: ``Authorization: Bearer <key>`` or Anthropic's ``x-api-key``."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_mlx.api.errors import APIError, ErrorType, error_response

OPEN_PATHS = frozenset({"/health"})  # always unauthenticated (load balancers)


class APIKeyMiddleware:
    """Rejects requests without the server's key with the protocol's 401 body."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        error = APIError(
            "Invalid or missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            ErrorType.AUTHENTICATION,
            code="invalid_api_key",
        )
        response = error_response(Request(scope), error)
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        return any(hmac.compare_digest(key, self._key) for key in sent_keys(scope))


def sent_keys(scope: Scope) -> list[bytes]:
    """The API keys a request sends: ``x-api-key`` first, then a Bearer token."""
    headers = dict(scope["headers"])
    keys = [headers.get(b"x-api-key", b"")]
    bearer = headers.get(b"authorization", b"")
    if bearer[:7].lower() == b"bearer ":
        keys.append(bearer[7:].strip())
    return [key for key in keys if key]
