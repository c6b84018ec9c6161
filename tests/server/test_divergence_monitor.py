"""The batch-divergence monitor's agreement, statuses and action, on chosen results."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from vllm_mlx.config import DivergenceAction, DivergenceConfig
from vllm_mlx.engine.types import EngineStats, FinishReason, RequestRecord
from vllm_mlx.server.monitors.divergence import (
    DivergenceMonitor,
    DivergenceStatus,
    Probe,
    ProbeResult,
    token_agreement,
)
from vllm_mlx.server.monitors.metrics import Binding, ServerMetrics


def monitor(action: DivergenceAction = DivergenceAction.WARN) -> DivergenceMonitor:
    config = DivergenceConfig(enabled=True, interval_s=60.0, threshold=0.95, action=action)
    return DivergenceMonitor(config)


def test_agreement_is_matching_positions_over_the_longer_run() -> None:
    assert token_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert token_agreement([1, 2, 3, 4], [1, 9, 3, 9]) == 0.5
    assert token_agreement([1, 2, 3, 4], [1, 2]) == 0.5  # the missing tail counts as differing
    assert token_agreement([1, 2], [1, 2, 3, 4]) == 0.5
    assert token_agreement([], []) == 1.0
    assert token_agreement([1], []) == 0.0
    assert ProbeResult((5, 6, 7, 8), (5, 6, 7, 0)).agreement == 0.75


def test_pending_until_the_first_probe() -> None:
    m = monitor()
    summary = m.summary()
    assert summary["status"] == "pending"
    assert summary["agreement"] is None and summary["last_probe_at"] is None
    assert summary["probes_run"] == 0 and summary["serializing"] is False
    assert set(summary) >= {
        "enabled",
        "status",
        "agreement",
        "last_probe_at",
        "probes_run",
        "threshold",
        "action",
        "serializing",
    }


def test_threshold_is_inclusive() -> None:
    m = monitor()
    assert m.observe(0.95) is DivergenceStatus.PASS
    assert m.observe(0.9499) is DivergenceStatus.WARNING
    assert m.record(list(range(32)), list(range(32))) is DivergenceStatus.PASS
    assert m.summary()["agreement"] == 1.0 and m.summary()["probes_run"] == 3


def test_warn_reports_without_serializing(caplog: pytest.LogCaptureFixture) -> None:
    m = monitor(DivergenceAction.WARN)
    with caplog.at_level(logging.WARNING):
        assert m.observe(0.5) is DivergenceStatus.WARNING
    assert not m.serializing
    assert "agreement 0.5000 below 0.95" in caplog.text and "action warn" in caplog.text


def test_serialize_holds_until_a_probe_passes(caplog: pytest.LogCaptureFixture) -> None:
    m = monitor(DivergenceAction.SERIALIZE)
    m.observe(1.0)
    assert not m.serializing
    m.record([1, 2, 3, 4], [1, 2, 0, 0])
    assert m.status is DivergenceStatus.WARNING and m.serializing
    assert m.summary()["serializing"] is True
    m.observe(0.9)  # still below: still serializing, no second warning
    assert m.serializing
    assert caplog.text.count("batch divergence: greedy token agreement") == 1
    with caplog.at_level(logging.INFO):
        m.observe(1.0)
    assert m.status is DivergenceStatus.PASS and not m.serializing
    assert "back to pass" in caplog.text


def test_disabled_when_the_runtime_never_batches() -> None:
    config = DivergenceConfig(enabled=True)
    m = DivergenceMonitor(config, batching=False)
    m.bind(_fixed(ProbeResult((1,), (2,))))
    assert asyncio.run(m.probe_once()) is DivergenceStatus.DISABLED
    assert m.summary()["probes_run"] == 0
    off = DivergenceMonitor(DivergenceConfig(), batching=False).summary()
    assert off["enabled"] is False and off["status"] == "disabled" and off["agreement"] is None
    # /v1/status writes the same shape itself when no monitor runs.
    assert set(status_divergence_without_monitor()) == set(off)


def test_probe_results_and_failures() -> None:
    m = monitor(DivergenceAction.SERIALIZE)
    assert asyncio.run(m.probe_once()) is DivergenceStatus.PENDING  # nothing bound yet
    m.bind(_fixed(ProbeResult((1, 2), (1, 3))))
    assert asyncio.run(m.probe_once()) is DivergenceStatus.WARNING and m.serializing

    async def broken() -> ProbeResult:
        raise RuntimeError("engine gone")

    m.bind(broken)
    assert asyncio.run(m.probe_once()) is DivergenceStatus.WARNING  # the status stands
    assert m.probes_failed == 1 and m.probes_run == 1


def test_run_probes_at_start_then_every_interval() -> None:
    config = DivergenceConfig(enabled=True, interval_s=0.01)
    m = DivergenceMonitor(config)
    calls = 0

    async def probe() -> ProbeResult:
        nonlocal calls
        calls += 1
        return ProbeResult((1,), (1,))

    async def main() -> None:
        m.bind(probe)
        task = asyncio.create_task(m.run())
        await asyncio.sleep(0)  # the first probe runs at once
        assert calls == 1
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert calls >= 3 and m.status is DivergenceStatus.PASS


def _fixed(result: ProbeResult) -> Probe:
    async def probe() -> ProbeResult:
        return result

    return probe


def test_metrics_read_the_monitor_and_skip_probe_sequences() -> None:
    m = monitor(DivergenceAction.SERIALIZE)
    metrics = ServerMetrics()
    metrics.bind(Binding("tiny", 2048, EngineStats, SimpleNamespace(divergence=m)))
    text = metrics.render().decode()
    assert 'vllm_mlx:batch_divergence_serializing{model_name="tiny"} 0.0' in text
    assert "vllm_mlx:batch_divergence_agreement" not in text  # no probe yet
    m.observe(0.5)
    text = metrics.render().decode()
    assert 'vllm_mlx:batch_divergence_agreement{model_name="tiny"} 0.5' in text
    assert 'vllm_mlx:batch_divergence_serializing{model_name="tiny"} 1.0' in text

    def retired(request_id: str) -> RequestRecord:
        return RequestRecord(request_id, FinishReason.LENGTH, 8, 4, 0, 1.0, 1.1, 1.5, (0.1,) * 3)

    metrics.observe(retired("divergence-probe-1-serial"))
    metrics.observe(retired("chatcmpl-1-0"))
    text = metrics.render().decode()
    assert 'vllm:request_success_total{finished_reason="length",model_name="tiny"} 1.0' in text


def status_divergence_without_monitor() -> dict[str, object]:
    from types import SimpleNamespace

    from vllm_mlx.api.diagnostics import divergence_summary
    from vllm_mlx.config import PolicyConfig

    return divergence_summary(SimpleNamespace(divergence=None, policy=PolicyConfig()))  # type: ignore[arg-type]
