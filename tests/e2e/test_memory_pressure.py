"""Memory pressure on a live server: each --memory-action observed, then recovery.

Real pressure comes from thresholds set below what the server already uses (a
tiny model still takes far more than 0.002 % of system memory). Recovery is
driven through the monitor's reading interface on an in-process app, with the
real engine behind it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error
from vllm_mlx.config import MemoryAction, MemoryConfig, ModelConfig, PolicyConfig, ServerConfig
from vllm_mlx.server.app import create_app
from vllm_mlx.server.monitors.memory import MemoryUsage

CRITICAL_NOW = ("--memory-warn-threshold", "0.001", "--memory-limit-threshold", "0.002")
CHAT = {
    "model": "default",
    "messages": [{"role": "user", "content": "Tell me a story."}],
    "max_tokens": 8,
    "temperature": 0,
}


def test_warn_logs_and_keeps_serving(launch_server: LaunchServer) -> None:
    server = launch_server(*CRITICAL_NOW, "--memory-action", "warn")
    resp = httpx.post(f"{server.base_url}/v1/chat/completions", json=CHAT, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 8
    assert "diagnostics" not in resp.json()
    log = server.log_tail(200_000)
    assert "memory pressure critical" in log and "--memory-action warn" in log
    status = httpx.get(f"{server.base_url}/v1/status", timeout=10).json()
    assert status["memory"]["pressure"] == "critical"
    assert status["memory"]["action"] == "warn"
    assert 0 < status["memory"]["used_percent"] <= 100


def test_reduce_context_halves_max_tokens_and_says_so(launch_server: LaunchServer) -> None:
    server = launch_server(*CRITICAL_NOW, "--memory-action", "reduce-context")
    resp = httpx.post(f"{server.base_url}/v1/chat/completions", json=CHAT, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # The tiny model never ends a turn by itself: max_tokens alone decides the length.
    assert body["usage"]["completion_tokens"] == 4
    assert body["choices"][0]["finish_reason"] == "length"
    memory = body["diagnostics"]["memory"]
    assert memory["max_tokens_factor"] == 0.5
    assert memory["pressure"] == "critical" and memory["action"] == "reduce-context"
    assert "max_tokens 8 -> 4" in server.log_tail(200_000)
    messages = {
        "model": "default",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    resp = httpx.post(f"{server.base_url}/v1/messages", json=messages, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["output_tokens"] == 5
    assert resp.json()["diagnostics"]["memory"]["max_tokens_factor"] == 0.5  # never silent


def test_reject_new_answers_503(launch_server: LaunchServer) -> None:
    server = launch_server(*CRITICAL_NOW, "--memory-action", "reject-new")
    url = server.base_url
    resp = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=60)
    error = assert_openai_error(resp, 503)
    assert error["code"] == "memory_pressure" and "memory pressure" in error["message"]
    assert int(resp.headers["retry-after"]) >= 1
    anthropic = httpx.post(
        f"{url}/v1/messages",
        json={"model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]},
        timeout=60,
    )
    assert anthropic.status_code == 503
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "overloaded_error"
    # Only new inference is refused: the server stays healthy and observable.
    health = httpx.get(f"{url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["memory_pressure"] == "critical"
    assert httpx.get(f"{url}/v1/status", timeout=10).json()["memory"]["action_in_force"]
    caps = httpx.get(f"{url}/v1/capabilities", timeout=10).json()
    assert caps["policies"]["memory"]["action"] == "reject-new"


def test_recovery_through_the_monitor(tiny_llama_path: Path) -> None:
    memory = MemoryConfig(0.001, 0.002, MemoryAction.REJECT_NEW, interval_s=3600)
    config = ServerConfig(
        model=ModelConfig(str(tiny_llama_path)), policy=PolicyConfig(memory=memory)
    )
    app = create_app(config)
    with TestClient(app) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
        monitor = app.state.memory_monitor
        total = monitor.reading().usage.total_bytes
        # Just under the limit is not enough: the level holds until a margin below it.
        monitor.observe(MemoryUsage(0, int(total * 0.0019 / 100), total))
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
        monitor.observe(MemoryUsage(0, 0, total))
        resp = client.post("/v1/chat/completions", json=CHAT)
        assert resp.status_code == 200, resp.text
        assert resp.json()["usage"]["completion_tokens"] == 8
        monitor.sample()  # a real reading again: back over the limit
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 503


def test_warn_above_limit_is_refused_at_start() -> None:
    from vllm_mlx.cli import build_parser, serve_config

    args = ["serve", "--memory-warn-threshold", "90", "--memory-limit-threshold", "80"]
    with pytest.raises(SystemExit, match="must not exceed"):
        serve_config(build_parser().parse_args(args))
