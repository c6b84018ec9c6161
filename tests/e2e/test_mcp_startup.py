"""A bad ``--mcp-config`` stops ``vllm-mlx serve`` with one line, before any model loads.

Each case runs the real command; the config is read while the options are turned into
config, so the (absent) model is never resolved and nothing binds a port.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.server import REPO_ROOT, free_port

# Our log records ("2026-01-01 10:00:00,123 INFO ...") are not the error line.
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ ")

CASES = {
    "missing-command": (
        "mcp.json",
        '{"servers": {"files": {"transport": "stdio", "args": ["x"]}}}',
        "servers.files.command",
    ),
    "bad-json": ("mcp.json", '{"mcpServers": {"files": {"command": "x",}}}', "invalid JSON"),
    "bad-yaml": ("mcp.yaml", "mcpServers:\n  files: [unclosed\n", "invalid YAML"),
    "unknown-transport": (
        "mcp.json",
        '{"servers": {"files": {"transport": "pigeon", "url": "http://127.0.0.1:1/mcp"}}}',
        "servers.files.transport",
    ),
    "forbidden-env": (
        "mcp.json",
        '{"mcpServers": {"files": {"command": "python3", "env": {"LD_PRELOAD": "/tmp/x.so"}}}}',
        "mcpServers.files.env.LD_PRELOAD",
    ),
    "shell-metacharacters": (
        "mcp.json",
        '{"mcpServers": {"files": {"command": "python3", "args": ["-c", "x; rm -rf /"]}}}',
        "mcpServers.files.args[1]",
    ),
}


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    # A model path that does not exist: reaching the loader would be a different error.
    cmd = [sys.executable, "-m", "vllm_mlx", "serve", "/nonexistent/model", *args]
    cmd += ["--host", "127.0.0.1", "--port", str(free_port())]
    return subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not _LOG_RECORD.match(line)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_one_line_and_a_failed_start(tmp_path: Path, case: str) -> None:
    name, text, expected = CASES[case]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    done = serve("--mcp-config", str(path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = error_lines(done.stderr)
    assert line.startswith(f"--mcp-config: {path}: "), line
    assert expected in line, line
    assert "nonexistent" not in done.stderr.replace(str(path), "")  # the model was never looked up


def test_missing_file(tmp_path: Path) -> None:
    done = serve("--mcp-config", str(tmp_path / "absent.json"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = error_lines(done.stderr)
    assert "absent.json" in line and "cannot read" in line, line
