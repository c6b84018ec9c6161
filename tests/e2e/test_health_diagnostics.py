"""GET /health/diagnostics on live servers: each check's pass and warning path, and auth.

Warnings come from real options (``--dtype float16``, a warn threshold below what
the server uses, ``--repetition-policy off``) and from a tiny model whose
generation_config names a different EOS than its tokenizer. The known-issues
list and the divergence verdict are driven on an in-process app with the real
engine behind it, through the checks' data file and the monitor's input.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error
from tests.fixtures.tiny_models import BOS, build_tiny_model
from vllm_mlx.api import health_checks
from vllm_mlx.config import DivergenceConfig, MemoryConfig, ModelConfig, PolicyConfig, ServerConfig
from vllm_mlx.server.app import create_app
from vllm_mlx.server.monitors.divergence import DivergenceMonitor
from vllm_mlx.server.monitors.memory import MemoryUsage

PATH = "/health/diagnostics"
CHECKS = {"dtype", "eos", "memory", "version", "batch_invariance", "repetition_policy"}
KEY = "diag-key"


def diagnostics(url: str, **headers: str) -> dict[str, Any]:
    resp = httpx.get(f"{url}{PATH}", headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"status", "model", "checks", "memory", "timestamp"}
    assert set(body["checks"]) == CHECKS
    for check in body["checks"].values():
        assert set(check) == {"status", "detail", "metadata"} and check["detail"]
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    return body


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in body["checks"].items()}


@pytest.fixture(scope="module")
def eos_disagreeing_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny llama whose generation_config stops on <|endoftext|> only, not <|im_end|>."""
    out = tmp_path_factory.mktemp("models") / "tiny-llama-eos"
    return build_tiny_model(out, "llama", generation_eos=(BOS,))


def test_every_check_passes_on_a_default_server(launch_server: LaunchServer) -> None:
    body = diagnostics(launch_server().base_url)
    assert body["status"] == "healthy", body
    assert set(statuses(body).values()) == {"pass"}
    assert body["model"] == "tiny-llama"
    assert body["memory"]["pressure"] == "normal"
    checks = body["checks"]
    assert checks["dtype"]["metadata"]["loaded"] == checks["dtype"]["metadata"]["trained"]
    assert checks["eos"]["metadata"]["chat_template"] == checks["eos"]["metadata"]["tokenizer"]
    assert checks["batch_invariance"]["detail"] == "monitor disabled (--batch-divergence-monitor)"
    assert checks["repetition_policy"]["metadata"] == {"mode": "safe"}
    versions = checks["version"]["metadata"]["versions"]
    assert set(versions) == {"mlx", "mlx-lm", "vllm-mlx"} and all(versions.values())


def test_a_generation_config_eos_disagreement_degrades(
    launch_server: LaunchServer, eos_disagreeing_path: Path
) -> None:
    body = diagnostics(launch_server(model=eos_disagreeing_path).base_url)
    assert body["status"] == "degraded"
    assert {n for n, s in statuses(body).items() if s != "pass"} == {"eos"}
    eos = body["checks"]["eos"]
    assert eos["status"] == "warning"
    assert "is not among generation_config's eos_token_id" in eos["detail"]
    assert eos["metadata"]["generation_config"] == [0]  # <|endoftext|>
    assert eos["metadata"]["tokenizer"] == eos["metadata"]["chat_template"] == 2  # <|im_end|>


WARNING_ARGS = (
    "--dtype", "float16",
    "--memory-warn-threshold", "0.001",
    "--repetition-policy", "off",
    "--batch-divergence-monitor",
)  # fmt: skip


def test_warning_paths_from_server_options(launch_server: LaunchServer) -> None:
    url = launch_server(*WARNING_ARGS).base_url
    body = diagnostics(url)
    assert body["status"] == "degraded"
    checks = body["checks"]
    assert checks["dtype"]["status"] == "warning"
    dtype = checks["dtype"]
    assert (dtype["metadata"]["loaded"], dtype["metadata"]["trained"]) == ("float16", "float32")
    assert "float16 on a float32 checkpoint loses precision" in dtype["detail"]
    if dtype["metadata"]["device"] == "cpu":
        assert "slow CPU kernels" in dtype["detail"]
    assert checks["memory"]["status"] == "warning"
    assert checks["memory"]["metadata"]["pressure"] == body["memory"]["pressure"] == "elevated"
    assert checks["repetition_policy"]["status"] == "warning"
    assert checks["repetition_policy"]["metadata"] == {"mode": "off"}
    assert checks["eos"]["status"] == checks["version"]["status"] == "pass"
    # The divergence probe runs at start; on the fp32 tiny model it agrees exactly.
    deadline = time.monotonic() + 60
    while checks["batch_invariance"]["metadata"]["status"] == "pending":
        assert time.monotonic() < deadline, checks["batch_invariance"]
        time.sleep(0.5)
        checks = diagnostics(url)["checks"]
    assert checks["batch_invariance"]["status"] == "pass"
    assert checks["batch_invariance"]["metadata"]["agreement"] == 1.0


def test_known_issue_divergence_and_critical_memory_in_process(
    tiny_llama_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issues = tmp_path / "known_issues.json"
    entry = {
        "package": "mlx-lm",
        "versions": [health_checks.installed_versions()["mlx-lm"]],
        "architectures": ["llama"],
        "detail": "a test entry for the installed mlx-lm",
    }
    issues.write_text(json.dumps({"issues": [entry]}))
    monkeypatch.setattr(health_checks, "KNOWN_ISSUES", issues)
    memory = MemoryConfig(interval_s=3600)
    config = ServerConfig(
        model=ModelConfig(str(tiny_llama_path)), policy=PolicyConfig(memory=memory)
    )
    app = create_app(config)
    with TestClient(app) as client:
        body = client.get(PATH).json()
        assert body["status"] == "degraded"
        assert statuses(body)["version"] == "warning"
        assert "a test entry for the installed mlx-lm" in body["checks"]["version"]["detail"]
        assert body["checks"]["version"]["metadata"]["known_issues"] == [entry]
        monitor = DivergenceMonitor(DivergenceConfig(enabled=True, threshold=0.95))
        app.state.divergence = monitor
        assert client.get(PATH).json()["checks"]["batch_invariance"]["detail"] == (
            "no probe has finished yet"
        )
        monitor.observe(0.5)
        divergence = client.get(PATH).json()["checks"]["batch_invariance"]
        assert divergence["status"] == "warning" and divergence["metadata"]["agreement"] == 0.5
        monitor.observe(1.0)
        assert statuses(client.get(PATH).json())["batch_invariance"] == "pass"
        usage = app.state.memory_monitor.reading().usage
        app.state.memory_monitor.observe(MemoryUsage(0, usage.total_bytes, usage.total_bytes))
        body = client.get(PATH).json()
        assert body["status"] == "unhealthy" and statuses(body)["memory"] == "fail"


@pytest.fixture(scope="module")
def keyed_url(launch_server: LaunchServer) -> str:
    return launch_server("--api-key", KEY).base_url


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": KEY}],
)
def test_diagnostics_needs_the_key_when_one_is_set(keyed_url: str, headers: dict[str, str]) -> None:
    resp = httpx.get(f"{keyed_url}{PATH}", headers=headers, timeout=30)
    assert assert_openai_error(resp, 401)["type"] == "authentication_error"


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}])
def test_diagnostics_accepts_the_key(keyed_url: str, headers: dict[str, str]) -> None:
    assert diagnostics(keyed_url, **headers)["status"] == "healthy"


def test_health_stays_open_with_a_key(keyed_url: str) -> None:
    resp = httpx.get(f"{keyed_url}/health", timeout=30)
    assert resp.status_code == 200 and resp.json()["status"] == "healthy"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer anything"}])
def test_diagnostics_is_open_without_a_key(
    launch_server: LaunchServer, headers: dict[str, str]
) -> None:
    assert diagnostics(launch_server().base_url, **headers)["status"] == "healthy"


def test_diagnostics_is_documented(launch_server: LaunchServer) -> None:
    url = launch_server().base_url
    caps = httpx.get(f"{url}/v1/capabilities", timeout=30).json()
    assert PATH in caps["endpoints"]
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    ok = document["paths"][PATH]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/HealthDiagnostics"}
    schema = document["components"]["schemas"]["HealthDiagnostics"]
    assert set(schema["required"]) == {"status", "model", "checks", "memory", "timestamp"}
