"""MCPManager: one SDK ``ClientSession`` per configured server, kept alive.

Each server is owned by one long-lived asyncio task, because the SDK's transport and
session context managers must be entered and exited in the same task::

    starting ──► connected ──(process exit / connection lost)──► restarting ──► connected
        │            ▲  └─(notifications/tools/list_changed)─► re-list tools       │
        ▼            └──────────────────── retry with backoff ◄── failed ◄──────────┘

Calls run in the caller's task on the owner's session; they never wait on the owner.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import mcp_types
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError as SDKError
from mcp.shared.message import SessionMessage

from vllm_mlx.mcp.catalog import (
    CatalogEntry,
    build_catalog,
    check_arguments,
    describe,
    error_result,
    split_qualified_name,
    to_tool_result,
)
from vllm_mlx.mcp.security import CallLimiter, child_environment
from vllm_mlx.mcp.types import (
    MCPConfig,
    ServerSpec,
    ServerState,
    ServerStateName,
    ServerUnavailable,
    ToolInfo,
    ToolResult,
    Transport,
    UnknownTool,
)

log = logging.getLogger(__name__)

_MAX_LIST_PAGES = 100  # a paginator that never ends cannot hang a re-list
_CALL_GRACE_S = 5.0  # hard cap past the SDK's own request timeout, in case a write blocks


@dataclass
class _Server:
    """Mutable run-time record of one server; only its owner task changes ``state``."""

    spec: ServerSpec
    state: ServerStateName = "starting"
    error: str | None = None
    restarts: int = 0
    session: ClientSession | None = None
    catalog: dict[str, CatalogEntry] = field(default_factory=dict)  # last listing, kept on loss
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # owner: something to look at
    lost: str | None = None  # why the current session is gone
    relist: bool = False  # tools/list_changed arrived
    check: bool = False  # something looked wrong: ping now
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def poke(self, *, lost: str | None = None, relist: bool = False, check: bool = False) -> None:
        if lost and self.lost is None:
            self.lost = lost
        self.relist |= relist
        self.check |= check
        self.wake.set()


class MCPManager:
    """Connects the configured MCP servers and runs tool calls on them (a ``ToolService``)."""

    def __init__(
        self,
        config: MCPConfig,
        *,
        restart_base_s: float = 0.5,
        restart_max_s: float = 30.0,
        connect_timeout_s: float = 30.0,
        ping_interval_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``restart_*``: backoff between reconnects (doubling). ``ping_interval_s``: how often a
        remote server is pinged while idle, to notice it is gone. ``clock`` feeds the limiter."""
        self._config = config
        self._servers = {spec.name: _Server(spec) for spec in config.servers}
        self._limiter = CallLimiter(config.max_tool_calls, clock=clock)
        self._restart_base_s = restart_base_s
        self._restart_max_s = restart_max_s
        self._connect_timeout_s = connect_timeout_s
        self._ping_interval_s = ping_interval_s
        self._running = False
        self._stopping = False

    # ----------------------------------------------------------------- ToolService

    async def start(self) -> None:
        """Connect every enabled server concurrently; returns once each has connected or
        failed its first attempt. Failures are recorded in ``servers()``, never raised."""
        if self._running:
            raise RuntimeError("MCPManager is already running")
        # Fresh records: their events bind to this loop (an app may be served again after stop).
        self._servers = {spec.name: _Server(spec) for spec in self._config.servers}
        self._running, self._stopping = True, False
        for srv in self._servers.values():
            if not srv.spec.enabled:
                srv.state = "disabled"
                srv.first_attempt.set()
                continue
            srv.task = asyncio.create_task(self._own(srv), name=f"mcp-{srv.spec.name}")
        await asyncio.gather(*(srv.first_attempt.wait() for srv in self._servers.values()))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close every session; the SDK ends each stdio child (stdin closed, then the
        process group is terminated). Waits at most ``timeout_s`` before cancelling."""
        self._stopping = True
        tasks = [srv.task for srv in self._servers.values() if srv.task is not None]
        for srv in self._servers.values():
            srv.wake.set()
            # A task still connecting has nothing to close gracefully: cancel it now.
            if srv.task is not None and srv.state != "connected":
                srv.task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for srv in self._servers.values():
            if srv.state != "disabled":
                srv.state = "stopped"
        self._running = False

    def servers(self) -> list[ServerState]:
        return [
            ServerState(
                name=srv.spec.name,
                transport=srv.spec.transport,
                state=srv.state,
                tools=len(srv.catalog) if srv.state == "connected" else 0,
                error=srv.error,
                restarts=srv.restarts,
            )
            for srv in self._servers.values()
        ]

    def tools(self) -> list[ToolInfo]:
        """The tools of connected servers, after allowed/blocked filtering."""
        return [
            entry.info
            for srv in self._servers.values()
            if srv.state == "connected"
            for entry in srv.catalog.values()
        ]

    async def call(self, qualified_name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run ``server__tool``. Raises ``UnknownTool``, ``InvalidArguments``,
        ``ServerUnavailable`` or ``CallLimited`` before calling; anything after that
        (tool error, timeout, lost connection) is a ``ToolResult`` with ``is_error``."""
        srv, entry = self._lookup(qualified_name)
        check_arguments(entry, arguments)
        session = srv.session
        if session is None or srv.state != "connected":
            raise ServerUnavailable(f"MCP server {srv.spec.name!r} is {srv.state}")
        self._limiter.acquire(qualified_name)
        timeout = srv.spec.timeout_s or self._config.default_timeout_s
        try:
            with anyio.fail_after(timeout + _CALL_GRACE_S):
                result = await session.call_tool(
                    entry.info.name, dict(arguments), read_timeout_seconds=timeout
                )
        except TimeoutError:
            return error_result(qualified_name, f"timed out after {timeout:g} s")
        except SDKError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                return error_result(qualified_name, f"timed out after {timeout:g} s")
            if exc.code == mcp_types.CONNECTION_CLOSED:
                srv.poke(check=True)
            return error_result(qualified_name, f"MCP server {srv.spec.name!r}: {exc.message}")
        except Exception as exc:  # the SDK's edge: transport errors of every kind; logged
            log.warning("MCP call %s failed: %s", qualified_name, describe(exc))
            srv.poke(check=True)
            return error_result(qualified_name, f"MCP server {srv.spec.name!r}: {describe(exc)}")
        return to_tool_result(qualified_name, result)

    # ----------------------------------------------------------------- internals

    def _lookup(self, qualified_name: str) -> tuple[_Server, CatalogEntry]:
        parts = split_qualified_name(qualified_name)
        srv = self._servers.get(parts[0]) if parts else None
        if parts is None or srv is None or srv.state == "disabled":
            raise UnknownTool(f"unknown MCP tool {qualified_name!r}")
        entry = srv.catalog.get(parts[1])
        if entry is None:
            if srv.state == "connected":
                raise UnknownTool(f"unknown MCP tool {qualified_name!r}")
            raise ServerUnavailable(f"MCP server {srv.spec.name!r} is {srv.state}")
        return srv, entry

    async def _own(self, srv: _Server) -> None:
        """The owner task: connect, watch, reconnect with backoff until stop()."""
        delay = self._restart_base_s
        try:
            while not self._stopping:
                began = time.monotonic()
                was_connected, reason = await self._session_once(srv)
                srv.first_attempt.set()
                if self._stopping:
                    break
                state: ServerStateName = "restarting" if was_connected else "failed"
                # Log a change once; a server that keeps failing the same way logs at debug.
                level = (
                    logging.DEBUG if (state, reason) == (srv.state, srv.error) else logging.WARNING
                )
                log.log(level, "MCP server %r %s: %s", srv.spec.name, state, reason)
                srv.state, srv.error = state, reason
                if time.monotonic() - began > self._restart_max_s:
                    delay = self._restart_base_s  # it ran a while: not a crash loop
                await _wait(srv.wake, delay)
                delay = min(delay * 2, self._restart_max_s)
                srv.restarts += 1
        finally:
            srv.session = None
            srv.first_attempt.set()
            srv.state = "stopped"

    async def _session_once(self, srv: _Server) -> tuple[bool, str]:
        """One connection, from spawn/connect to loss. Returns (was it connected, why it ended)."""
        srv.lost, srv.relist, srv.check = None, False, False
        srv.wake.clear()
        connected = False
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(_open_transport(srv.spec))
                # Relay the read stream so its end (process exit, closed stream) is seen here.
                relay_send, relay_read = anyio.create_memory_object_stream[
                    SessionMessage | Exception
                ](0)
                group = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(group.cancel_scope.cancel)
                group.start_soon(_relay, read, relay_send, srv)
                session = ClientSession(
                    relay_read, write, message_handler=partial(_on_message, srv)
                )
                await stack.enter_async_context(session)
                with anyio.fail_after(self._connect_timeout_s):
                    await session.initialize()
                    srv.catalog = build_catalog(srv.spec, await _list_tools(session))
                srv.session, srv.state, srv.error = session, "connected", None
                connected = True
                srv.first_attempt.set()
                log.info("MCP server %r connected (%d tools)", srv.spec.name, len(srv.catalog))
                reason = await self._watch(srv, session)
                srv.session = None
                return True, reason
        except Exception as exc:  # the SDK's edge: spawn, connect and transport errors; logged
            return connected, describe(exc)
        finally:
            srv.session = None

    async def _watch(self, srv: _Server, session: ClientSession) -> str:
        """Wait on the connected session: re-list on change, ping when idle or in doubt."""
        remote = srv.spec.transport is not Transport.STDIO
        while True:
            woke = await _wait(srv.wake, self._ping_interval_s if remote else None)
            srv.wake.clear()
            if self._stopping:
                return "stopped"
            if srv.lost:
                return srv.lost
            if not woke or srv.check:
                srv.check = False
                try:
                    with anyio.fail_after(min(self._connect_timeout_s, 10.0)):
                        await session.send_ping()
                except Exception as exc:  # any failure means the connection is gone
                    return f"ping failed: {describe(exc)}"
            if srv.relist:
                srv.relist = False
                try:
                    with anyio.fail_after(self._connect_timeout_s):
                        srv.catalog = build_catalog(srv.spec, await _list_tools(session))
                except Exception as exc:  # a server that cannot list is restarted
                    return f"re-listing tools failed: {describe(exc)}"
                log.info("MCP server %r tools changed (%d tools)", srv.spec.name, len(srv.catalog))


def _open_transport(spec: ServerSpec) -> AbstractAsyncContextManager[Any]:
    if spec.transport is Transport.STDIO:
        if spec.command is None:
            raise ValueError("stdio server without a command")
        # The SDK spawns with exec (no shell) in a new process group, and on exit closes
        # stdin, then terminates the whole group.
        params = StdioServerParameters(
            command=spec.command, args=list(spec.args), env=child_environment(spec.env)
        )
        return stdio_client(params, errlog=sys.stderr)
    if spec.url is None:
        raise ValueError("remote server without a url")
    if spec.transport is Transport.SSE:
        return sse_client(spec.url, headers=dict(spec.headers))
    return _streamable_http(spec.url, dict(spec.headers))


@asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    async with (
        create_mcp_http_client(headers=headers) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams


async def _relay(
    source: ObjectReceiveStream[SessionMessage | Exception],
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    srv: _Server,
) -> None:
    try:
        async with sink:
            async for item in source:
                await sink.send(item)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    except Exception as exc:  # transport edge: any read failure ends the session; logged
        log.warning("MCP server %r read failed: %s", srv.spec.name, describe(exc))
    srv.poke(lost="the server closed the connection")


async def _on_message(srv: _Server, message: IncomingMessage) -> None:
    """Runs in the SDK's receive loop: only flag work for the owner task."""
    if isinstance(message, mcp_types.ToolListChangedNotification):
        srv.poke(relist=True)
    elif isinstance(message, Exception):
        log.info("MCP server %r transport error: %s", srv.spec.name, describe(message))
        srv.poke(check=True)


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


async def _wait(event: asyncio.Event, timeout: float | None) -> bool:
    """Whether ``event`` was set within ``timeout`` seconds (None: wait for it)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
