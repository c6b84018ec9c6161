"""The real Claude Code CLI in print mode against the embedded model.

Claude Code sends what a replayed fixture cannot keep up with: system entries inside
``messages``, adaptive thinking, ``output_config.effort``, ``context_management`` and a
billing-header system block. ``make test`` installs the pinned CLI under
``.venv/claude-code`` when npm is there; without it, or without ``unshare``, this skips.

The CLI runs in its own network namespace (``unshare -n``: loopback only), so no packet
it might send for telemetry or updates can leave the machine; a Unix-socket bridge
(tests/fixtures/bridge.py) carries its requests to the server outside.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LaunchServer
from tests.fixtures.bridge import serve_unix_to_tcp
from tests.fixtures.server import REPO_ROOT

CLAUDE = Path(
    os.environ.get("CLAUDE_CODE_BIN", REPO_ROOT / ".venv/claude-code/node_modules/.bin/claude")
)
INNER_PORT = 4000  # inside the namespace, where nothing else listens


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLAUDE.exists(), reason=f"Claude Code CLI not installed at {CLAUDE}"),
    pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -n` to fence the CLI off"),
]


def run_claude(sock: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    inner = (
        "ip link set lo up 2>/dev/null || true; "
        f'"{sys.executable}" -m tests.fixtures.bridge tcp-to-unix {INNER_PORT} "{sock}" & '
        'bridge=$!; sleep 1; "$@"; rc=$?; kill $bridge; exit $rc'
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{INNER_PORT}",
        "ANTHROPIC_API_KEY": "not-needed",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
    }
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", inner, "sh", str(CLAUDE), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_claude_code_print_mode_gets_an_answer(launch_server: LaunchServer, tmp_path: Path) -> None:
    server = launch_server("--default-temperature", "0", model=None, startup_timeout_s=600)
    port = int(server.base_url.rsplit(":", 1)[1])
    sock = tmp_path / "bridge.sock"
    stop = serve_unix_to_tcp(str(sock), port)
    log_start = server.log_path.stat().st_size
    try:
        done = run_claude(
            sock,
            tmp_path,
            "-p",
            "What is the capital of France?",
            "--output-format",
            "json",
            "--tools",
            "",
            "--system-prompt",
            "Answer in one short sentence.",
        )
    finally:
        stop()
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    result = json.loads(done.stdout)
    assert result["is_error"] is False, result
    assert result["result"].strip(), result
    log = server.log_path.read_bytes()[log_start:].decode("utf-8", errors="replace")
    statuses = re.findall(r'"POST /v1/messages\S* HTTP/1.1" (\d{3})', log)
    assert statuses and all(s == "200" for s in statuses), log[-3000:]
