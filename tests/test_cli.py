"""``vllm-mlx serve`` options that turn into frozen config."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_mlx.cli import build_parser, serve_config
from vllm_mlx.config import DivergenceAction, DivergenceConfig, RuntimeMode, ServerConfig
from vllm_mlx.mcp.types import Transport


def config(*args: str) -> ServerConfig:
    return serve_config(build_parser().parse_args(["serve", *args]))


def test_divergence_monitor_defaults() -> None:
    assert config().policy.divergence == DivergenceConfig(
        enabled=False, interval_s=300.0, threshold=0.95, action=DivergenceAction.WARN
    )
    assert config().policy.deterministic is False


def test_divergence_monitor_options() -> None:
    divergence = config(
        "--batch-divergence-monitor", "--batch-divergence-interval", "60",
        "--batch-divergence-threshold", "0.9", "--batch-divergence-action", "serialize",
    ).policy.divergence  # fmt: skip
    assert divergence == DivergenceConfig(True, 60.0, 0.9, DivergenceAction.SERIALIZE)


@pytest.mark.parametrize(
    "bad",
    [
        ("--batch-divergence-threshold", "0"),
        ("--batch-divergence-threshold", "1.5"),
        ("--batch-divergence-interval", "0"),
        ("--batch-divergence-action", "reject"),
    ],
)
def test_divergence_monitor_refuses_bad_values(bad: tuple[str, str]) -> None:
    with pytest.raises(SystemExit):
        config(*bad)


@pytest.mark.parametrize("mode", [(), ("--runtime-mode", "batched"), ("--continuous-batching",)])
def test_deterministic_forces_simple(mode: tuple[str, ...]) -> None:
    cfg = config("--deterministic", *mode)
    assert cfg.policy.deterministic is True
    assert cfg.engine.runtime_mode is RuntimeMode.SIMPLE
    assert config(*mode).engine.runtime_mode is not RuntimeMode.SIMPLE


def test_embedding_model_option() -> None:
    assert config().embedding.model is None  # the embedded default, loaded on first use
    assert config("--embedding-model", "BAAI/bge-small-en-v1.5").embedding.model == (
        "BAAI/bge-small-en-v1.5"
    )


def test_mcp_config_option(tmp_path: Path) -> None:
    assert config().mcp is None  # the MCP routes answer 503
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"files": {"command": "python3", "args": ["s.py"]}}}')
    mcp = config("--mcp-config", str(path)).mcp
    assert mcp is not None
    (server,) = mcp.servers
    assert (server.name, server.transport, server.command) == ("files", Transport.STDIO, "python3")


def test_bad_mcp_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"servers": {"files": {"transport": "stdio"}}}')
    with pytest.raises(SystemExit) as exit_:
        config("--mcp-config", str(path))
    message = str(exit_.value.code)
    assert message.startswith(f"--mcp-config: {path}: servers.files.command")
    assert "\n" not in message
