"""The memory monitor's levels, hysteresis, trend and actions, on chosen readings."""

from __future__ import annotations

import logging

import pytest

from vllm_mlx.config import MemoryAction, MemoryConfig
from vllm_mlx.server.monitors.memory import MemoryMonitor, MemoryUsage, Pressure

TOTAL = 1000


def usage(pct: float, rss_pct: float = 0.0) -> MemoryUsage:
    return MemoryUsage(int(pct * TOTAL / 100), int(rss_pct * TOTAL / 100), TOTAL)


def monitor(action: MemoryAction = MemoryAction.WARN) -> MemoryMonitor:
    config = MemoryConfig(warn_pct=70.0, limit_pct=85.0, action=action, interval_s=2.5)
    return MemoryMonitor(config, lambda: usage(10))


def test_used_share_is_the_larger_of_device_and_rss() -> None:
    # On CPU MLX's buffers live inside the RSS: adding them would count them twice.
    assert usage(30, 50).used_pct == pytest.approx(50.0)
    assert usage(60, 20).used_pct == pytest.approx(60.0)
    assert MemoryUsage(1, 1, 0).used_pct == 0.0


@pytest.mark.parametrize(
    ("pct", "level"),
    [(10, Pressure.NORMAL), (70, Pressure.ELEVATED), (84.9, Pressure.ELEVATED),
     (85, Pressure.CRITICAL), (99, Pressure.CRITICAL)],
)  # fmt: skip
def test_levels_from_thresholds(pct: float, level: Pressure) -> None:
    assert monitor().observe(usage(pct)).pressure is level


def test_hysteresis_keeps_a_level_until_two_points_below() -> None:
    m = monitor()
    assert m.observe(usage(86)).pressure is Pressure.CRITICAL
    assert m.observe(usage(84)).pressure is Pressure.CRITICAL  # within 2 points: no flap
    assert m.observe(usage(82.5)).pressure is Pressure.ELEVATED
    assert m.observe(usage(69)).pressure is Pressure.ELEVATED
    assert m.observe(usage(67.9)).pressure is Pressure.NORMAL
    assert m.transitions == 3


def test_trend_against_the_previous_reading() -> None:
    m = monitor()
    assert m.observe(usage(50)).trend == "steady"
    assert m.observe(usage(52)).trend == "rising"
    assert m.observe(usage(52.2)).trend == "steady"
    assert m.observe(usage(40)).trend == "falling"


def test_transitions_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    m = monitor(MemoryAction.REJECT_NEW)
    with caplog.at_level(logging.INFO, logger="vllm_mlx.server.monitors.memory"):
        for pct in (10, 90, 91, 92, 10, 10):
            m.observe(usage(pct))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "critical" in lines[0] and "reject-new" in lines[0] and "90.0%" in lines[0]
    assert "back to normal" in lines[1] and "was critical" in lines[1]


def test_reject_new_refuses_only_while_critical() -> None:
    m = monitor(MemoryAction.REJECT_NEW)
    assert m.refusal() is None  # no reading yet
    m.observe(usage(90))
    error = m.refusal()
    assert error is not None
    assert error.status == 503 and error.code == "memory_pressure"
    assert error.retry_after_s == 3  # the interval, rounded up
    assert "memory pressure" in error.message and "90.0%" in error.message
    assert m.max_tokens_factor() == 1.0
    m.observe(usage(10))
    assert m.refusal() is None


def test_reduce_context_halves_only_while_critical() -> None:
    m = monitor(MemoryAction.REDUCE_CONTEXT)
    m.observe(usage(80))
    assert m.max_tokens_factor() == 1.0
    m.observe(usage(86))
    assert m.max_tokens_factor() == 0.5
    assert m.refusal() is None
    summary = m.summary()
    assert summary["pressure"] == "critical" and summary["action_in_force"] is True
    assert summary["action"] == "reduce-context" and summary["used_percent"] == 86.0


def test_warn_never_changes_requests() -> None:
    m = monitor(MemoryAction.WARN)
    m.observe(usage(99))
    assert m.pressure is Pressure.CRITICAL
    assert m.refusal() is None and m.max_tokens_factor() == 1.0


def test_sample_reads_the_source() -> None:
    m = monitor()
    assert m.reading() is None
    assert m.sample().used_pct == pytest.approx(10.0)
    assert m.reading() is not None
