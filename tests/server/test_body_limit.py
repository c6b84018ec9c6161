"""The body limit as a bare ASGI middleware: what it reads, what it answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from vllm_mlx.server.middleware.body_limit import BodyLimitMiddleware

MIB = 1024 * 1024
CHUNK = 64 * 1024  # 16 chunks make the 1 MiB limit exactly


def http_scope(path: str = "/v1/chat/completions", length: int | None = None) -> Scope:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": headers,
    }


class Client:
    """Feeds body chunks (forever when ``chunks`` is None) and records what is sent."""

    def __init__(self, chunks: int | None) -> None:
        self.chunks = chunks
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        more = self.chunks is None or self.reads < self.chunks
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        return int(starts[0]["status"])

    @property
    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if "body" in m))


async def read_all_then_echo(scope: Scope, receive: Receive, send: Send) -> None:
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"size": size}).encode()})


async def catch_everything(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that turns any failure while reading into its own 400."""
    try:
        await read_all_then_echo(scope, receive, send)
    except Exception:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def run(app: Callable[..., Any], scope: Scope, client: Client, max_mb: float = 1.0) -> None:
    asyncio.run(BodyLimitMiddleware(app, max_mb=max_mb)(scope, client.receive, client.send))


def assert_too_large(client: Client) -> None:
    assert client.status == 413
    error = client.json["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large"
    assert "1 MB" in error["message"] and "--max-request-mb" in error["message"]


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    client = Client(chunks=17)
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    run(app, http_scope(length=MIB + 1), client)
    assert_too_large(client)
    assert client.reads == 0 and not called


def test_an_unknown_length_is_refused_once_it_passes_the_limit() -> None:
    client = Client(chunks=None)  # would send forever
    run(read_all_then_echo, http_scope(), client)
    assert_too_large(client)
    assert client.reads == 17  # 16 chunks are exactly 1 MiB; the 17th passes it


def test_the_apps_own_answer_to_a_cut_off_body_is_dropped() -> None:
    client = Client(chunks=None)
    run(catch_everything, http_scope(), client)
    assert_too_large(client)
    assert len(client.sent) == 2


def test_bodies_up_to_the_limit_pass_whole() -> None:
    exact = Client(chunks=16)
    run(read_all_then_echo, http_scope(length=MIB), exact)
    assert exact.status == 200 and exact.json == {"size": MIB}
    chunked = Client(chunks=3)
    run(read_all_then_echo, http_scope(), chunked)
    assert chunked.status == 200 and chunked.json == {"size": 3 * CHUNK}


def test_fractional_limits() -> None:
    client = Client(chunks=None)
    run(read_all_then_echo, http_scope(), client, max_mb=0.5)
    assert client.status == 413 and client.reads == 9
    assert "0.5 MB" in client.json["error"]["message"]


def test_messages_routes_get_anthropic_bodies() -> None:
    client = Client(chunks=None)
    run(read_all_then_echo, http_scope("/v1/messages"), client)
    assert client.status == 413
    body = client.json
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "--max-request-mb" in body["error"]["message"]


def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def never(*_: Any) -> Any:
        raise AssertionError("the middleware must not touch a lifespan's messages")

    asyncio.run(BodyLimitMiddleware(app, max_mb=1)({"type": "lifespan"}, never, never))
    assert seen == ["lifespan"]
