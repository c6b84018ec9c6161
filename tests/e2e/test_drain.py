"""Graceful drain: SIGTERM lets running streams finish, refuses new work, exits 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.server import LiveServer, assert_openai_error, run_server, sse_events

STREAMS = 8


def _body(max_tokens: int) -> dict[str, Any]:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


class _Stream(threading.Thread):
    """One streaming chat request, recording its events."""

    def __init__(self, url: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.events: list[dict[str, Any]] = []
        self.started = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST", f"{self.url}/v1/chat/completions", json=_body(self.max_tokens), timeout=120
            ) as resp:
                assert resp.status_code == 200, resp.read()
                for event in sse_events(resp.iter_lines()):
                    self.events.append(event)
                    if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                        self.started.set()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.started.set()

    @property
    def text_tokens(self) -> int:
        return sum(
            1 for e in self.events for c in e.get("choices", []) if c["delta"].get("content")
        )

    @property
    def finish_reason(self) -> str | None:
        reasons = [c.get("finish_reason") for e in self.events for c in e.get("choices", [])]
        return next((r for r in reasons if r), None)


def _start_streams(server: LiveServer, max_tokens: int) -> list[_Stream]:
    streams = [_Stream(server.base_url, max_tokens) for _ in range(STREAMS)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.started.wait(60), "a stream never started"
        assert s.error is None, s.error
    return streams


def _wait_exit(server: LiveServer, timeout_s: float) -> int:
    try:
        return server.process.wait(timeout=timeout_s)
    except Exception:
        pytest.fail(f"server did not exit after SIGTERM; log tail:\n{server.log_tail()}")


@pytest.mark.slow
def test_sigterm_lets_running_streams_finish(tmp_path: Path, tiny_llama_long_path: Path) -> None:
    with run_server(
        tiny_llama_long_path, ["--shutdown-timeout", "60"], work_dir=tmp_path
    ) as server:
        streams = _start_streams(server, max_tokens=300)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Still listening while it drains: a new request is told to go elsewhere.
        resp = httpx.post(
            f"{server.base_url}/v1/chat/completions", json={**_body(4), "stream": False}
        )
        error = assert_openai_error(resp, 503)
        assert error["code"] == "shutting_down" and int(resp.headers["retry-after"]) >= 1
        health = httpx.get(f"{server.base_url}/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        for s in streams:
            s.join(120)
            assert s.error is None, s.error
            assert s.finish_reason == "length", s.events[-2:]
            assert not any("error" in e for e in s.events)
        assert _wait_exit(server, 30) == 0
        log = server.log_tail(500_000)
        assert "draining" in log and "Traceback" not in log


@pytest.mark.slow
def test_grace_period_ends_the_rest_with_an_error(
    tmp_path: Path, tiny_llama_long_path: Path
) -> None:
    with run_server(tiny_llama_long_path, ["--shutdown-timeout", "1"], work_dir=tmp_path) as server:
        streams = _start_streams(server, max_tokens=30000)  # far longer than the grace period
        server.process.send_signal(signal.SIGTERM)
        for s in streams:
            s.join(60)
            assert s.error is None, s.error
            errors = [e["error"] for e in s.events if "error" in e]
            assert len(errors) == 1, s.events[-2:]
            assert "shutting down" in errors[0]["message"]
            assert s.text_tokens > 0 and s.finish_reason is None
        assert _wait_exit(server, 30) == 0
        assert "Traceback" not in server.log_tail(500_000)
