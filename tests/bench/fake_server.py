"""A tiny fake OpenAI streaming server with a fake prefix cache and GET /v1/status.

It is a raw asyncio HTTP/1.1 server on a free port, run on its own thread, so
the bench (which calls ``asyncio.run``) drives it like a real one. It tests the
load generator, not our engine. Routes, by path prefix:

- ``/ok/v1/chat/completions``: waits PREFILL_S_PER_TOKEN per uncached prompt
  token, streams one token per chunk, then usage (with
  ``prompt_tokens_details.cached_tokens``) and [DONE]; some events are written
  in two halves to split them across reads. ``/ok/v1/status`` answers like
  vllm-mlx, with ``cache.blocks_used = BLOCKS_PER_REQUEST × running chats``.
- ``/hold/...``: like ``/ok/``, but every chat waits HOLD_S before its first
  token, so concurrent requests surely overlap while /v1/status is polled.
- ``/plain/...``: like ``/ok/`` without cached_tokens in usage, and no
  /v1/status (HTTP 404): another kind of server.
- ``/slow/...``: like ``/ok/``, but SLOW_TOKEN_DELAY_S between tokens, so
  streams last long enough for a request sent mid-stream to overlap them.
- ``/partial/...``: like ``/ok/``, but /v1/status holds only ``cache.hit_rate``.
- ``/fail/v1/chat/completions``: HTTP 500 with a JSON error body.
- ``/broken/v1/chat/completions``: a few tokens, then the connection closes
  without [DONE].

Fake tokenization: every word of every message's content is one token, each
message adds a role token and an end token, and the "generation prompt" adds
five more, so one user message of n words is n + TEMPLATE_TOKENS tokens. The
fake cache serves the longest common token prefix with any earlier prompt.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

TEMPLATE_TOKENS = 7  # what the fake "chat template" adds to one user message's word count
TOKEN_DELAY_S = 0.002  # pause between streamed tokens
SLOW_TOKEN_DELAY_S = 0.02  # pause between streamed tokens on /slow/
PREFILL_S_PER_TOKEN = 0.0002  # "prefill" time per uncached prompt token, before the first token
HOLD_S = 0.3  # extra wait before the first token on /hold/
FAKE_BLOCK_SIZE = 4  # cache.block_size in /v1/status
FAKE_BLOCKS_TOTAL = 1000
BLOCKS_PER_REQUEST = 5  # cache.blocks_used per running chat request
FAKE_MODE = "batched"


@dataclass
class FakeState:
    """What the fake server saw (mutated on the server thread only)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)  # chat request bodies
    headers: list[dict[str, str]] = field(default_factory=list)  # chat request headers
    in_flight: int = 0  # chat requests being served
    max_in_flight: int = 0
    status_calls: int = 0  # GET /v1/status requests
    seen: list[list[str]] = field(default_factory=list)  # prompt tokens of earlier chats
    running: dict[str, str] = field(default_factory=dict)  # request id -> cache hit type
    prompt_total: int = 0  # Σ prompt tokens, for the fake cache.hit_rate
    cached_total: int = 0  # Σ cached tokens


def fake_tokens(messages: list[dict[str, Any]]) -> list[str]:
    """The fake tokenization of a chat request (see the module docstring)."""
    tokens: list[str] = []
    for message in messages:
        tokens += [f"<{message['role']}>", *str(message["content"]).split(), "</>"]
    return tokens + ["<gen>"] * (TEMPLATE_TOKENS - 2)


def cached_prefix(tokens: list[str], seen: list[list[str]]) -> int:
    """Longest common prefix with an earlier prompt, leaving at least one token to compute."""
    best = 0
    for old in seen:
        n = 0
        for a, b in zip(tokens, old, strict=False):
            if a != b:
                break
            n += 1
        best = max(best, n)
    return min(best, len(tokens) - 1)


def _sse(obj: Any) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return f"data: {data}\n\n".encode()


def _json_response(writer: asyncio.StreamWriter, status: str, obj: Any) -> None:
    body = json.dumps(obj).encode()
    writer.write(
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n".encode()
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *header_lines = head.strip().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    method, path, *_ = request_line.split()
    return method, path, headers, body


def status_body(state: FakeState, route: str) -> dict[str, Any]:
    """What /<route>/v1/status answers."""
    hit_rate = state.cached_total / state.prompt_total if state.prompt_total else 0.0
    if route == "partial":
        return {"cache": {"hit_rate": hit_rate}}
    return {
        "status": "running",
        "num_running": state.in_flight,
        "num_waiting": 0,
        "cache": {
            "type": "paged_cache",
            "entries": len(state.seen),
            "hit_rate": hit_rate,
            "memory_mb": 1.0,
            "block_size": FAKE_BLOCK_SIZE,
            "blocks_total": FAKE_BLOCKS_TOTAL,
            "blocks_used": BLOCKS_PER_REQUEST * state.in_flight,
            "blocks_free": FAKE_BLOCKS_TOTAL - BLOCKS_PER_REQUEST * state.in_flight,
            "blocks_cached": 0,
        },
        "runtime": {"mode": FAKE_MODE, "active_concurrency": state.in_flight},
        "requests": [
            {"request_id": rid, "cache_hit_type": hit, "cached_tokens": 0}
            for rid, hit in state.running.items()
        ],
    }


def _usage(state: FakeState, body: dict[str, Any], route: str) -> tuple[dict[str, Any], int]:
    """The final usage of a chat request and its uncached prompt tokens; updates the cache."""
    tokens = fake_tokens(body["messages"])
    cached = cached_prefix(tokens, state.seen)
    state.seen.append(tokens)
    state.prompt_total += len(tokens)
    state.cached_total += cached
    usage: dict[str, Any] = {"prompt_tokens": len(tokens), "completion_tokens": body["max_tokens"]}
    if route != "plain":
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage, len(tokens) - cached


async def _stream_tokens(
    writer: asyncio.StreamWriter,
    body: dict[str, Any],
    usage: dict[str, Any],
    cut: bool,
    delay: float = TOKEN_DELAY_S,
) -> None:
    """Write a chat completion stream; ``cut`` stops half-way without [DONE]."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    writer.write(_sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    max_tokens = int(body["max_tokens"])
    for i in range(max_tokens):
        if cut and i == max_tokens // 2:
            return
        event = _sse({"choices": [{"index": 0, "delta": {"content": f" t{i}"}}]})
        if i % 3 == 0:  # split this event across two network writes
            writer.write(event[:9])
            await writer.drain()
            await asyncio.sleep(delay / 2)
            event = event[9:]
        writer.write(event)
        await writer.drain()
        await asyncio.sleep(delay)
    writer.write(_sse({"choices": [], "usage": usage}) + _sse("[DONE]"))
    await writer.drain()


async def _chat(
    state: FakeState, writer: asyncio.StreamWriter, route: str, headers: dict[str, str], raw: bytes
) -> None:
    body = json.loads(raw)
    state.bodies.append(body)
    state.headers.append(headers)
    if route == "fail":
        _json_response(writer, "500 Internal Server Error", {"error": {"message": "boom"}})
        return
    usage, uncached = _usage(state, body, route)
    details = usage.get("prompt_tokens_details", {})
    rid = headers.get("x-request-id", f"fake-{len(state.bodies)}")
    state.running[rid] = "prefix" if details.get("cached_tokens") else "miss"
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        await asyncio.sleep(uncached * PREFILL_S_PER_TOKEN + (HOLD_S if route == "hold" else 0))
        delay = SLOW_TOKEN_DELAY_S if route == "slow" else TOKEN_DELAY_S
        await _stream_tokens(writer, body, usage, cut=route == "broken", delay=delay)
    finally:
        state.in_flight -= 1
        state.running.pop(rid, None)


def _handler(state: FakeState) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, headers, raw = await _read_request(reader)
            route = path.strip("/").split("/")[0]
            if method == "GET" and path.endswith("/v1/status"):
                state.status_calls += 1
                if route == "plain":
                    _json_response(writer, "404 Not Found", {"detail": "Not Found"})
                else:
                    _json_response(writer, "200 OK", status_body(state, route))
            else:
                await _chat(state, writer, route, headers, raw)
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    return handle


@dataclass(frozen=True)
class FakeServer:
    port: int
    state: FakeState

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/v1"


@contextmanager
def run_fake_server() -> Iterator[FakeServer]:
    """Run the fake server on a free port in a background thread."""
    loop = asyncio.new_event_loop()
    state = FakeState()
    server = loop.run_until_complete(asyncio.start_server(_handler(state), "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield FakeServer(port=port, state=state)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
