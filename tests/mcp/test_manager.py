"""MCPManager against the real SDK test servers (stdio, streamable HTTP, SSE) on loopback."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import psutil
import pytest

from tests.mcp.conftest import HttpServer, stdio_spec
from vllm_mlx.mcp.manager import MCPManager
from vllm_mlx.mcp.types import (
    CallLimited,
    InvalidArguments,
    MCPConfig,
    ServerSpec,
    ServerUnavailable,
    Transport,
    UnknownTool,
)


def manager(*specs: ServerSpec, **config: object) -> MCPManager:
    return MCPManager(
        MCPConfig(servers=specs, **config),  # type: ignore[arg-type]
        restart_base_s=0.05,
        restart_max_s=0.5,
        ping_interval_s=0.5,
    )


async def until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def pid_of(mgr: MCPManager, server: str) -> int:
    result = await mgr.call(f"{server}__pid", {})
    assert result.structured_content is not None
    return int(result.structured_content["result"])


def stdio_children() -> list[psutil.Process]:
    """The test servers this process spawned (the SDK execs them as direct children;
    servers other tests started run their own under another process)."""
    return [
        child
        for child in psutil.Process().children()
        if any("stdio_server.py" in part for part in child.cmdline())
    ]


async def exercise(mgr: MCPManager, server: str) -> None:
    """The calls every transport must get right."""
    names = {tool.qualified_name for tool in mgr.tools()}
    assert {f"{server}__echo", f"{server}__fail", f"{server}__sleep"} <= names
    echo = next(t for t in mgr.tools() if t.qualified_name == f"{server}__echo")
    assert echo.input_schema["required"] == ["text"]
    assert echo.description

    ok = await mgr.call(f"{server}__echo", {"text": "hi"})
    assert not ok.is_error
    assert ok.content == ({"type": "text", "text": "hi"},)
    assert ok.structured_content == {"result": "hi"}

    failed = await mgr.call(f"{server}__fail", {"message": "boom"})
    assert failed.is_error
    assert failed.error_message is not None and "boom" in failed.error_message

    began = time.monotonic()
    slow = await mgr.call(f"{server}__sleep", {"seconds": 5})
    assert slow.is_error
    assert slow.error_message == "timed out after 0.5 s"
    assert time.monotonic() - began < 3

    with pytest.raises(InvalidArguments, match="text"):
        await mgr.call(f"{server}__echo", {})
    with pytest.raises(InvalidArguments, match=r"arguments\.text"):
        await mgr.call(f"{server}__echo", {"text": 3})
    with pytest.raises(UnknownTool):
        await mgr.call(f"{server}__nope", {})
    with pytest.raises(UnknownTool):
        await mgr.call("nobody__echo", {"text": "x"})
    with pytest.raises(UnknownTool):
        await mgr.call("echo", {"text": "x"})

    # tools/list_changed: the new tool is listed without a reconnect.
    await mgr.call(f"{server}__add_tool", {"name": "extra"})
    await until(lambda: f"{server}__extra" in {t.qualified_name for t in mgr.tools()})
    assert (await mgr.call(f"{server}__extra", {"text": "x"})).content[0]["text"] == "x"
    assert (await mgr.call(f"{server}__echo", {"text": "still"})).structured_content


def test_stdio_server_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_MLX_TEST_SECRET", "do-not-leak")
    spec = stdio_spec(timeout_s=0.5, env={"GIVEN": "yes"})

    async def main() -> None:
        mgr = manager(spec)
        await mgr.start()
        try:
            (state,) = mgr.servers()
            assert (state.name, state.transport, state.state, state.error) == (
                "local",
                Transport.STDIO,
                "connected",
                None,
            )
            assert state.tools == 6
            await exercise(mgr, "local")
            pid = await pid_of(mgr, "local")
            child = psutil.Process(pid)
            # Spawned with exec, no shell in between, with a minimal environment.
            assert child.ppid() == os.getpid()
            assert child.cmdline() == [spec.command, *spec.args]
            env = child.environ()
            assert env["GIVEN"] == "yes"
            assert "VLLM_MLX_TEST_SECRET" not in env
            assert env.get("PATH") == os.environ.get("PATH")
        finally:
            await mgr.stop()
        assert mgr.servers()[0].state == "stopped"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert stdio_children() == []

    asyncio.run(main())


def test_crash_restarts_and_relists() -> None:
    async def main() -> None:
        mgr = manager(stdio_spec())
        await mgr.start()
        try:
            first = await pid_of(mgr, "local")
            await mgr.call("local__add_tool", {"name": "extra"})
            await until(lambda: len(mgr.tools()) == 7)
            crashed = await mgr.call("local__crash", {})
            assert crashed.is_error
            await until(lambda: mgr.servers()[0].state != "connected")
            assert mgr.servers()[0].state in ("restarting", "failed")
            assert mgr.servers()[0].error
            with pytest.raises(ServerUnavailable):
                await mgr.call("local__echo", {"text": "x"})
            await until(lambda: mgr.servers()[0].state == "connected")
            state = mgr.servers()[0]
            assert state.restarts >= 1
            assert state.tools == 6  # re-listed from the fresh process
            assert await pid_of(mgr, "local") != first
            assert not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie"
        finally:
            await mgr.stop()
        assert stdio_children() == []

    asyncio.run(main())


def test_failures_are_isolated() -> None:
    async def main() -> None:
        mgr = manager(
            stdio_spec("good"),
            ServerSpec(name="missing", transport=Transport.STDIO, command="/nonexistent/mcp"),
            ServerSpec(
                name="down", transport=Transport.STREAMABLE_HTTP, url="http://127.0.0.1:9/mcp"
            ),
            stdio_spec("off", enabled=False),
        )
        await mgr.start()
        try:
            states = {s.name: s for s in mgr.servers()}
            assert states["good"].state == "connected"
            assert states["missing"].state == "failed"
            assert "/nonexistent/mcp" in (states["missing"].error or "")
            assert states["down"].state == "failed"
            assert states["down"].error
            assert states["off"].state == "disabled"
            assert {t.server for t in mgr.tools()} == {"good"}
            with pytest.raises(ServerUnavailable):
                await mgr.call("missing__echo", {"text": "x"})
            with pytest.raises(UnknownTool):
                await mgr.call("off__echo", {"text": "x"})
        finally:
            await mgr.stop()
        assert stdio_children() == []

    asyncio.run(main())


def test_allowed_and_blocked_tools() -> None:
    async def main() -> None:
        spec = stdio_spec(
            allowed_tools=frozenset({"echo", "fail"}), blocked_tools=frozenset({"fail"})
        )
        mgr = manager(spec)
        await mgr.start()
        try:
            assert [t.qualified_name for t in mgr.tools()] == ["local__echo"]
            assert mgr.servers()[0].tools == 1
            with pytest.raises(UnknownTool):
                await mgr.call("local__fail", {"message": "x"})
        finally:
            await mgr.stop()

    asyncio.run(main())


def test_call_limit_per_tool() -> None:
    async def main() -> None:
        mgr = manager(stdio_spec(), max_tool_calls=2)
        await mgr.start()
        try:
            await mgr.call("local__echo", {"text": "1"})
            await mgr.call("local__echo", {"text": "2"})
            with pytest.raises(CallLimited) as info:
                await mgr.call("local__echo", {"text": "3"})
            assert 0 < info.value.retry_after_s <= 60
            await mgr.call("local__pid", {})  # another tool has its own budget
            with pytest.raises(InvalidArguments):  # bad arguments do not spend the budget
                await mgr.call("local__fail", {})
        finally:
            await mgr.stop()

    asyncio.run(main())


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
def test_remote_server(http_server: Callable[[str], HttpServer], transport: str) -> None:
    server = http_server(transport)
    kind = Transport.SSE if transport == "sse" else Transport.STREAMABLE_HTTP

    async def main() -> None:
        mgr = manager(ServerSpec(name="web", transport=kind, url=server.url, timeout_s=0.5))
        await mgr.start()
        try:
            assert mgr.servers()[0].state == "connected"
            await exercise(mgr, "web")
            # The server process dies: the manager notices, retries, and reconnects
            # once it is back on the same port.
            crashed = await mgr.call("web__crash", {})
            assert crashed.is_error
            await until(lambda: mgr.servers()[0].state in ("restarting", "failed"))
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            await until(lambda: mgr.servers()[0].state == "connected")
            assert mgr.servers()[0].restarts >= 1
            assert not (await mgr.call("web__echo", {"text": "back"})).is_error
        finally:
            await mgr.stop()

    asyncio.run(main())


def test_stop_cancels_servers_still_connecting() -> None:
    async def main() -> None:
        mgr = manager(stdio_spec())
        task = asyncio.create_task(mgr.start())
        await asyncio.sleep(0.05)  # the child is spawned but not yet initialized
        await mgr.stop()
        await task
        assert mgr.servers()[0].state == "stopped"
        await until(lambda: stdio_children() == [], timeout_s=5)

    asyncio.run(main())


def test_start_again_after_stop_on_another_loop() -> None:
    mgr = manager(stdio_spec())

    async def cycle() -> None:
        await mgr.start()
        try:
            assert mgr.servers()[0].state == "connected"
            with pytest.raises(RuntimeError):
                await mgr.start()
        finally:
            await mgr.stop()

    asyncio.run(cycle())
    asyncio.run(cycle())  # a second serve of the same app: a new event loop
    assert stdio_children() == []
