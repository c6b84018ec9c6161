"""The batch-divergence monitor and --deterministic on the tiny model.

On a live batched server the real probe agrees exactly (1.0, ``pass``) and does
not change users' greedy output. The serialize action is driven through the
monitor's interface on an in-process app, with the real engine behind it: a
perturbed result holds tracked requests one at a time, a real probe recovers.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.conftest import LaunchServer
from vllm_mlx.config import (
    DivergenceAction,
    DivergenceConfig,
    EngineConfig,
    ModelConfig,
    PolicyConfig,
    RuntimeMode,
    ServerConfig,
)
from vllm_mlx.server.app import create_app
from vllm_mlx.server.monitors.divergence import DivergenceMonitor

CHAT = {
    "model": "default",
    "messages": [{"role": "user", "content": "Tell me a story."}],
    "max_tokens": 16,
    "temperature": 0,
}
STREAM = {**CHAT, "max_tokens": 96, "ignore_eos": True, "stream": True}


def wait_for(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s")


def metric(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + "{")]
    assert len(lines) == 1, (name, lines)
    return float(lines[0].rsplit(" ", 1)[1])


def total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def turns(events: list[tuple[int, str]]) -> int:
    """How many times the response messages switch request, plus one."""
    numbers = [n for n, kind in events if kind != "enter"]
    return 1 + sum(a != b for a, b in itertools.pairwise(numbers))


def test_real_probe_passes_and_leaves_user_output_alone(launch_server: LaunchServer) -> None:
    server = launch_server(
        "--runtime-mode", "batched", "--batch-divergence-monitor",
        "--batch-divergence-interval", "0.5",
    )  # fmt: skip
    url = server.base_url

    def divergence() -> dict[str, Any]:
        body = httpx.get(f"{url}/v1/status", timeout=10).json()
        summary: dict[str, Any] = body["batch_divergence"]
        return summary if summary["probes_run"] >= 1 else {}

    summary = wait_for(divergence)
    assert summary["enabled"] is True and summary["status"] == "pass", summary
    assert summary["agreement"] == 1.0 and summary["serializing"] is False
    assert summary["threshold"] == 0.95 and summary["action"] == "warn"
    scrape = httpx.get(f"{url}/metrics", timeout=10).text
    assert metric(scrape, "vllm_mlx:batch_divergence_agreement") == 1.0
    assert metric(scrape, "vllm_mlx:batch_divergence_serializing") == 0.0
    assert total(scrape, "vllm:request_success_total") == 0  # probes are not user requests
    # Probes keep running (every 0.5 s) while users ask: greedy output never moves.
    texts = set()
    for _ in range(6):
        resp = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=60)
        assert resp.status_code == 200, resp.text
        texts.add(resp.json()["choices"][0]["message"]["content"])
        time.sleep(0.2)
    assert len(texts) == 1
    later = httpx.get(f"{url}/v1/status", timeout=10).json()["batch_divergence"]
    assert later["probes_run"] > summary["probes_run"] and later["status"] == "pass"


def test_deterministic_is_reported(launch_server: LaunchServer) -> None:
    url = launch_server("--deterministic").base_url
    caps = httpx.get(f"{url}/v1/capabilities", timeout=10).json()
    assert caps["features"]["deterministic"] is True
    assert caps["runtime"]["deterministic"] is True and caps["runtime"]["mode"] == "simple"
    assert caps["runtime"]["batch_divergence_monitor"]["enabled"] is False
    status = httpx.get(f"{url}/v1/status", timeout=10).json()
    assert status["runtime"]["deterministic"] is True
    assert status["batch_divergence"]["status"] == "disabled"
    resp = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=60)
    assert resp.status_code == 200, resp.text


class SendLog:
    """Outermost ASGI wrapper: which tracked request entered and sent what, in order."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.events: list[tuple[int, str]] = []  # (request number, enter | start | body | end)
        self._count = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self._count += 1
            number = self._count
        self.events.append((number, "enter"))

        async def logged(message: Message) -> None:
            kind = "start" if message["type"] == "http.response.start" else "body"
            if message["type"] == "http.response.body" and not message.get("more_body"):
                kind = "end"
            self.events.append((number, kind))
            await send(message)

        await self.app(scope, receive, logged)


def two_streams(client: TestClient, log: SendLog) -> list[tuple[int, str]]:
    """Two streamed chats at once; the wrapper's events of just these two."""
    log.events.clear()
    barrier = threading.Barrier(2)

    def one(_: int) -> None:
        barrier.wait()
        resp = client.post("/v1/chat/completions", json=STREAM)
        assert resp.status_code == 200, resp.text
        assert resp.text.rstrip().endswith("data: [DONE]")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(2)))
    return list(log.events)


def test_serialize_holds_requests_until_a_probe_passes(tiny_llama_path: Path) -> None:
    divergence = DivergenceConfig(enabled=True, interval_s=3600, action=DivergenceAction.SERIALIZE)
    config = ServerConfig(
        model=ModelConfig(str(tiny_llama_path)),
        engine=EngineConfig(runtime_mode=RuntimeMode.BATCHED),
        policy=PolicyConfig(divergence=divergence),
    )
    app = create_app(config)
    log = SendLog(app)
    with TestClient(log) as client:
        monitor: DivergenceMonitor = app.state.divergence
        wait_for(lambda: monitor.probes_run >= 1)  # the probe at start, on the real engine
        assert monitor.summary()["status"] == "pass" and monitor.agreement == 1.0

        monitor.record(list(range(32)), list(range(16)) + [0] * 16)  # a perturbed result
        status = client.get("/v1/status").json()["batch_divergence"]
        assert status["status"] == "warning" and status["agreement"] == 0.5
        assert status["serializing"] is True
        assert metric(client.get("/metrics").text, "vllm_mlx:batch_divergence_serializing") == 1

        events = two_streams(client, log)
        first_end = events.index(next(e for e in events if e[1] == "end"))
        assert sum(kind == "enter" for _, kind in events[:first_end]) == 2, events  # both waited
        assert turns(events) == 2, events  # one whole response, then the other

        assert client.portal is not None
        assert client.portal.call(monitor.probe_once) == "pass"  # a real probe recovers
        assert client.get("/v1/status").json()["batch_divergence"]["serializing"] is False
        deep = {**CHAT, "include_diagnostics": True, "diagnostics_level": "deep"}
        runtime = client.post("/v1/chat/completions", json=deep).json()["diagnostics"]["runtime"]
        assert runtime["batch_divergence"]["status"] == "pass", runtime
        assert runtime["batch_divergence"]["probes_run"] == 3  # start, perturbed, recovery
        events = two_streams(client, log)
        assert turns(events) > 2, events  # batched again: the streams interleave


def test_deterministic_serializes_tracked_routes(tiny_llama_path: Path) -> None:
    config = ServerConfig(
        model=ModelConfig(str(tiny_llama_path)), policy=PolicyConfig(deterministic=True)
    )
    app = create_app(config)
    log = SendLog(app)
    with TestClient(log) as client:
        assert app.state.divergence is None
        events = two_streams(client, log)
        first_end = events.index(next(e for e in events if e[1] == "end"))
        assert sum(kind == "enter" for _, kind in events[:first_end]) == 2, events
        assert turns(events) == 2, events
