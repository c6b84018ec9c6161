"""The shipped systemd unit: valid for systemd, and its ExecStart parses as our CLI."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_mlx.cli import build_parser, serve_config

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "vllm-mlx.service"


def _directives() -> dict[str, str]:
    text = UNIT.read_text().replace("\\\n", " ")
    pairs = (line.split("=", 1) for line in text.splitlines() if re.match(r"^\w+=", line))
    return {key: value for key, value in pairs}


def test_exec_start_is_a_valid_serve_command() -> None:
    argv = shlex.split(_directives()["ExecStart"])
    assert Path(argv[0]).name == "vllm-mlx" and argv[1] == "serve"
    config = serve_config(build_parser().parse_args(argv[1:]))
    # systemd must wait longer than the drain before it kills.
    assert int(_directives()["TimeoutStopSec"]) > config.policy.shutdown_timeout_s
    assert _directives()["KillSignal"] == "SIGTERM"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that the binary exists: point it at this environment's CLI.
    cli = Path(sys.executable).with_name("vllm-mlx")
    unit = tmp_path / "vllm-mlx.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/vllm-mlx", str(cli)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
