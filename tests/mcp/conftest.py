"""Fixtures for the MCP tests: the SDK test servers of tests/mcp/servers, on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vllm_mlx.mcp.types import ServerSpec, Transport

SERVERS = Path(__file__).parent / "servers"


def stdio_spec(name: str = "local", **overrides: object) -> ServerSpec:
    fields: dict[str, object] = {
        "name": name,
        "transport": Transport.STDIO,
        "command": sys.executable,
        "args": (str(SERVERS / "stdio_server.py"),),
    }
    fields.update(overrides)
    return ServerSpec(**fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"test MCP server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"test MCP server did not listen on {port}")


class HttpServer:
    """One http_server.py process; ``restart()`` brings it back on the same port."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        path = "/sse" if transport == "sse" else "/mcp"
        self.url = f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        cmd = [sys.executable, str(SERVERS / "http_server.py"), "--port", str(self.port)]
        self.proc = subprocess.Popen([*cmd, "--transport", self.transport])
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def http_server() -> Iterator[Callable[[str], HttpServer]]:
    started: list[HttpServer] = []

    def start(transport: str = "streamable-http") -> HttpServer:
        server = HttpServer(transport)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
