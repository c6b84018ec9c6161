"""The listening socket, bound before the model loads, and uvicorn on it.

A taken port or a foreign ``--host`` is reported in a line at once, rather than
by uvicorn after the model has loaded and its kernels were built. The server's
last start-up line says what to send it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from vllm_mlx.config import ServerConfig
from vllm_mlx.server.drain import Drain

log = logging.getLogger(__name__)

_BACKLOG = 2048  # uvicorn's default


class ListenError(RuntimeError):
    """The server cannot listen where it was asked to."""


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or a ListenError that says what to change."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"--host {host!r} is not an address ({exc.strerror}); use one of this "
            "machine's addresses, e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is fine
    try:
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(_explain(exc, host, port)) from None
    return sock


def _explain(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{host}:{port} is already in use (another server?); "
            "stop it or pick another port with --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"--host {host} is not an address of this machine; use one of its addresses, "
            "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        )
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port}; pick one above 1023 with --port"
    return f"cannot listen on {host}:{port}: {exc.strerror}"


def ready_line(config: ServerConfig, model_id: str) -> str:
    """Where the server answers, what model id to send, and a request to paste."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host, config.host)
    root = f"http://{f'[{host}]' if ':' in host else host}:{config.port}/v1"
    body = {"model": "default", "messages": [{"role": "user", "content": "Hello!"}]}
    auth = ' -H "Authorization: Bearer $YOUR_API_KEY"' if config.policy.api_key else ""
    return (
        f"ready: {root} serves {model_id!r} (send it as model {model_id!r} or 'default'); "
        f"try: curl {root}/chat/completions -H 'Content-Type: application/json'{auth} "
        f"-d '{json.dumps(body)}'"
    )


class _Server(uvicorn.Server):
    """uvicorn, with our ready line after its start-up lines and a drain before it stops.

    The first SIGTERM / SIGINT starts the drain (server/drain.py) and uvicorn stops
    once it is over; a second SIGINT (Ctrl-C again) stops at once.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, settings: ServerConfig) -> None:
        super().__init__(config)
        self._app, self._settings = app, settings
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain: Drain | None = getattr(self._app.state, "drain", None)
        if drain is None or drain.draining or not self.started:
            super().handle_exit(sig, frame)
            return
        log.info("%s received: draining (a second Ctrl-C stops at once)", signal.Signals(sig).name)
        asyncio.get_running_loop().call_soon_threadsafe(self._start_drain, drain)

    def _start_drain(self, drain: Drain) -> None:
        async def drain_then_exit() -> None:
            try:
                await drain.run(
                    self._settings.policy.shutdown_timeout_s,
                    lambda: self._app.state.concurrency.active,
                    self._app.state.serving.engine.fail_all,
                )
            finally:
                self.should_exit = True

        self._drain_task = asyncio.get_running_loop().create_task(drain_then_exit())

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        serving = getattr(self._app.state, "serving", None)
        if self.started and serving is not None:
            log.info("%s", ready_line(self._settings, serving.model_id))


def serve(config: ServerConfig, sock: socket.socket) -> None:
    """Load the model and serve on ``sock`` until interrupted."""
    from vllm_mlx.server.app import create_app

    app = create_app(config)
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down by now
        _Server(settings, app, config).run(sockets=[sock])
