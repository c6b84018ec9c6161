"""The guide's production commands start and serve, with the embedded model."""

from __future__ import annotations

import shlex
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.conftest import LaunchServer

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "vllm-mlx.service"

# "Recommended Settings", less the hub id and the port the fixture picks.
RECOMMENDED = (
    "--continuous-batching", "--use-paged-cache", "--api-key", "your-secret-key",
    "--rate-limit", "60", "--timeout", "120",
)  # fmt: skip


def _unit_args() -> tuple[str, ...]:
    """ExecStart of the shipped unit, after `serve MODEL`, without --port."""
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))[3:]
    i = argv.index("--port")
    return tuple(argv[:i] + argv[i + 2 :])


@pytest.mark.slow
def test_recommended_settings_serve(launch_server: LaunchServer) -> None:
    url = launch_server(*RECOMMENDED, model=None).base_url
    assert httpx.post(f"{url}/v1/chat/completions", json={}, timeout=30).status_code == 401
    with OpenAI(base_url=f"{url}/v1", api_key="your-secret-key", max_retries=0) as client:
        reply = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
    assert "Paris" in (reply.choices[0].message.content or "")
    caps = httpx.get(
        f"{url}/v1/capabilities", headers={"x-api-key": "your-secret-key"}, timeout=30
    ).json()
    assert caps["rate_limit"] == {"enabled": True, "requests_per_minute": 60}
    assert caps["defaults"]["timeout_seconds"] == 120
    assert caps["auth"]["enabled"] is True


@pytest.mark.slow
def test_systemd_exec_start_serves(launch_server: LaunchServer) -> None:
    args = _unit_args()
    assert "--continuous-batching" in args and "--use-paged-cache" in args
    url = launch_server(*args, model=None).base_url
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1
