"""What an operator sees: bad options and addresses fail at once, refusals are logged,
and the start-up log ends with a line to act on."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import REPO_ROOT, free_port


def _serve(*args: str, timeout: float = 30) -> tuple[int, str, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_mlx", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "99999"),
        ("--port", "0"),
        ("--port", "http"),
        ("--default-temperature", "-1"),
        ("--default-top-p", "1.5"),
        ("--timeout", "nan"),
        ("--max-step-ms", "0"),
    ],
)
def test_a_bad_number_is_a_usage_error(option: str, value: str) -> None:
    code, out, _ = _serve(option, value)
    assert code == 2, out
    assert out.startswith("usage: vllm-mlx serve"), out
    assert f"argument {option}" in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("option", "value"),
    [("--timeout", "nan"), ("--status-interval", "nan"), ("--temperature", "nan")],
)
def test_bench_refuses_nan(option: str, value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_mlx", "bench", option, value],
        capture_output=True, text=True, timeout=30, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2 and "vllm-mlx bench: error:" in proc.stderr, proc.stderr


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_a_taken_port_fails_before_the_model_loads() -> None:
    sock, port = _busy_port()
    with sock:
        code, out, took = _serve("--host", "127.0.0.1", "--port", str(port))
    assert code != 0 and took < 3.0, (code, took, out)
    assert f"127.0.0.1:{port} is already in use" in out and "--port" in out, out
    assert "resolved to" not in out and "loaded " not in out, out  # the model never loaded
    assert "Traceback" not in out, out


def test_a_host_that_is_not_ours_fails_at_once() -> None:
    # 192.0.2.1 is TEST-NET-1: never an address of this machine; binding sends nothing.
    code, out, took = _serve("--host", "192.0.2.1", "--port", str(free_port()))
    assert code != 0 and took < 3.0, (code, took, out)
    assert "--host 192.0.2.1 is not an address of this machine" in out, out


def _log_lines(log: str, request_id: str) -> list[str]:
    return [line for line in log.splitlines() if f"request {request_id}:" in line]


def test_each_refusal_is_logged_once_with_its_id_and_message(
    launch_server: LaunchServer,
) -> None:
    server = launch_server()
    cases = [
        ("/v1/chat/completions", {"model": "default", "messages": []}, "messages"),
        ("/v1/completions", {"model": "default", "prompt": "hi", "max_tokens": -1}, "max_tokens"),
        (
            "/v1/messages",
            {"model": "default", "max_tokens": 8, "messages": [{"role": "tool", "content": "x"}]},
            "messages.0.role",
        ),
    ]
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for path, body, expected in cases:
            request_id = f"console-{uuid.uuid4().hex[:8]}"
            r = http.post(path, json=body, headers={"x-request-id": request_id})
            assert r.status_code == 400, r.text
            message = r.json()["error"]["message"]
            assert expected in message
            deadline = time.monotonic() + 5
            while not (lines := _log_lines(server.log_tail(200_000), request_id)):
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.05)
            assert len(lines) == 1, lines
            assert f"POST {path} -> 400" in lines[0] and message in lines[0], lines[0]
            assert " INFO " in lines[0], lines[0]


def test_the_last_start_up_line_says_what_to_send(launch_server: LaunchServer) -> None:
    server = launch_server()
    port = server.base_url.rsplit(":", 1)[1]
    lines = server.log_tail(200_000).splitlines()
    ready = [i for i, line in enumerate(lines) if " ready: " in line]
    assert len(ready) == 1, server.log_tail()
    started = [i for i, line in enumerate(lines) if "Application startup complete" in line]
    assert started and started[0] < ready[0], lines[: ready[0] + 1]  # after uvicorn's lines
    line = lines[ready[0]]
    assert f"http://127.0.0.1:{port}/v1" in line and "'default'" in line
    assert f"curl http://127.0.0.1:{port}/v1/chat/completions" in line, line
