"""RuntimeModeController: how many sequences may run in each runtime mode."""

from __future__ import annotations

import pytest

from vllm_mlx.config import EngineConfig, RuntimeMode
from vllm_mlx.engine.runtime import RuntimeModeController


def controller(
    mode: RuntimeMode, threshold: int = 2, max_num_seqs: int = 8
) -> RuntimeModeController:
    return RuntimeModeController(
        EngineConfig(runtime_mode=mode, runtime_mode_threshold=threshold, max_num_seqs=max_num_seqs)
    )


@pytest.mark.parametrize("in_flight", [0, 1, 2, 5, 100])
def test_simple_always_runs_one(in_flight: int) -> None:
    assert controller(RuntimeMode.SIMPLE).max_running(in_flight) == 1


@pytest.mark.parametrize("in_flight", [0, 1, 2, 5, 100])
def test_batched_always_runs_up_to_max_num_seqs(in_flight: int) -> None:
    assert controller(RuntimeMode.BATCHED, max_num_seqs=8).max_running(in_flight) == 8


@pytest.mark.parametrize(
    ("in_flight", "expected"), [(0, 1), (1, 1), (2, 1), (3, 6), (4, 6), (50, 6)]
)
def test_auto_batches_from_the_threshold(in_flight: int, expected: int) -> None:
    assert controller(RuntimeMode.AUTO, threshold=3, max_num_seqs=6).max_running(in_flight) == (
        expected
    )


def test_auto_with_the_default_config() -> None:
    ctl = RuntimeModeController(EngineConfig())
    assert ctl.max_running(1) == 1
    assert ctl.max_running(2) == EngineConfig().max_num_seqs


def test_non_positive_settings_are_clamped_to_one() -> None:
    ctl = controller(RuntimeMode.AUTO, threshold=0, max_num_seqs=0)
    assert ctl.max_running(0) == 1
    assert ctl.max_running(1) == 1  # threshold 1 reached, but the batch is at least 1
    assert controller(RuntimeMode.AUTO, threshold=-5, max_num_seqs=4).max_running(1) == 4
    assert controller(RuntimeMode.BATCHED, max_num_seqs=-1).max_running(3) == 1


def test_auto_threshold_of_one_batches_any_request() -> None:
    ctl = controller(RuntimeMode.AUTO, threshold=1, max_num_seqs=4)
    assert ctl.max_running(0) == 1
    assert ctl.max_running(1) == 4


@pytest.mark.parametrize(("max_running", "name"), [(1, "simple"), (2, "batched"), (64, "batched")])
def test_mode_name_follows_max_running(max_running: int, name: str) -> None:
    assert controller(RuntimeMode.AUTO).mode_name(max_running) == name


def test_mode_name_of_auto_switches_with_load() -> None:
    ctl = controller(RuntimeMode.AUTO, threshold=2, max_num_seqs=4)
    assert ctl.mode_name(ctl.max_running(1)) == "simple"
    assert ctl.mode_name(ctl.max_running(2)) == "batched"
    assert ctl.mode_name(ctl.max_running(1)) == "simple"  # and back when load drops
