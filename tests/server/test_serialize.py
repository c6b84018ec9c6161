"""The serialize middleware as a bare ASGI app: turns taken end to end, or not at all."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from vllm_mlx.server.middleware.serialize import SerializeMiddleware

CHUNKS = 4


def http_scope(path: str = "/v1/chat/completions") -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A streamed response that yields to the loop between its chunks."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(CHUNKS):
        await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": b"x", "more_body": i < CHUNKS - 1})


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def run_two(active: bool, path: str = "/v1/chat/completions") -> list[tuple[str, Message]]:
    """Two concurrent streams through the middleware; every message sent, in order."""
    middleware = SerializeMiddleware(streaming_app, active=lambda: active)
    sent: list[tuple[str, Message]] = []

    def sender(name: str) -> Send:
        async def send(message: Message) -> None:
            sent.append((name, message))

        return send

    async def main() -> None:
        await asyncio.gather(
            middleware(http_scope(path), receive, sender("a")),
            middleware(http_scope(path), receive, sender("b")),
        )

    asyncio.run(main())
    return sent


def test_second_stream_starts_after_the_first_ones_last_byte() -> None:
    sent = run_two(active=True)
    names = [name for name, _ in sent]
    assert names == ["a"] * (CHUNKS + 1) + ["b"] * (CHUNKS + 1)
    last_of_a = names.index("b") - 1
    assert sent[last_of_a][1].get("more_body") is False  # a's final chunk went first


def test_streams_interleave_while_inactive() -> None:
    names = [name for name, _ in run_two(active=False)]
    assert names[:2] == ["a", "b"]  # both started before either finished


def test_untracked_paths_never_wait() -> None:
    names = [name for name, _ in run_two(active=True, path="/v1/status")]
    assert names[:2] == ["a", "b"]


def test_active_is_asked_per_request() -> None:
    state = {"on": False}
    middleware = SerializeMiddleware(streaming_app, active=lambda: state["on"])
    order: list[str] = []

    def sender(name: str) -> Send:
        async def send(message: Message) -> None:
            order.append(name)

        return send

    async def main() -> None:
        first = asyncio.create_task(middleware(http_scope(), receive, sender("a")))
        await asyncio.sleep(0)
        state["on"] = True  # a is already running unserialized; b and c take turns
        await asyncio.gather(
            first,
            middleware(http_scope(), receive, sender("b")),
            middleware(http_scope(), receive, sender("c")),
        )

    asyncio.run(main())
    rest = [n for n in order if n != "a"]
    assert rest == ["b"] * (CHUNKS + 1) + ["c"] * (CHUNKS + 1)
    last_of_a = max(i for i, name in enumerate(order) if name == "a")
    assert order.index("b") < last_of_a  # b did not wait for a
