"""Load shedding with --max-queue, and /v1/status from a request's first token."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error, sse_events

LONG = {
    "model": "default",
    "messages": [{"role": "user", "content": "Go on and on."}],
    "max_tokens": 20000,
    "temperature": 0,
    "stream": True,
}


def _hold_stream(url: str, first_token: threading.Event, stop: threading.Event) -> None:
    """A long stream that stays open until ``stop`` is set."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=LONG, timeout=120) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                first_token.set()
            if stop.is_set():
                return


def _status(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/status", timeout=10).json()


def test_max_queue_sheds_load(launch_server: LaunchServer, tiny_llama_long_path: Path) -> None:
    args = ("--max-queue", "1", "--max-num-seqs", "1", "--runtime-mode", "batched")
    url = launch_server(*args, model=tiny_llama_long_path).base_url
    stop = threading.Event()
    running, waiting = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=_hold_stream, args=(url, running, stop), daemon=True),
        threading.Thread(target=_hold_stream, args=(url, waiting, stop), daemon=True),
    ]
    try:
        threads[0].start()
        assert running.wait(30)
        threads[1].start()
        deadline = time.monotonic() + 30
        while _status(url)["num_waiting"] < 1:
            assert time.monotonic() < deadline, _status(url)
            time.sleep(0.05)
        body = {**LONG, "stream": False, "max_tokens": 2}
        resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        error = assert_openai_error(resp, 503)
        assert error["code"] == "queue_full" and "--max-queue 1" in error["message"]
        assert resp.headers["retry-after"] == "1"
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    deadline = time.monotonic() + 30
    while _status(url)["num_running"] or _status(url)["num_waiting"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body = {**LONG, "stream": False, "max_tokens": 2}
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 200, resp.text


def test_status_lists_a_request_from_its_first_token(tiny_server: str) -> None:
    body = {**LONG, "max_tokens": 1000}  # still running when the status is read
    headers = {"x-request-id": "status-probe"}
    with httpx.stream(
        "POST", f"{tiny_server}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as resp:
        events = sse_events(resp.iter_lines())  # held: dropping it would close the stream
        for event in events:
            if any(c["delta"].get("content") for c in event["choices"]):
                break  # the first token has been streamed
        status = _status(tiny_server)
        events.close()
    assert status["runtime"]["active_concurrency"] >= 1, json.dumps(status)
    ids = [r["request_id"] for r in status["requests"]]
    assert "status-probe-0" in ids, status
    entry = status["requests"][ids.index("status-probe-0")]
    assert entry["generated_tokens"] >= 1 and entry["phase"] == "generation", entry
