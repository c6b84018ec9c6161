"""engine/stats.py: counters kept on the engine thread, snapshots for other threads."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from vllm_mlx.config import RepetitionPolicy
from vllm_mlx.engine.stats import STATS_PERIOD_S, EngineCounters
from vllm_mlx.engine.types import EngineStats


def retired(prompt: int, output: int, loop: str | None = None) -> Any:
    request = SimpleNamespace(repetition_policy=RepetitionPolicy.STRICT)
    return SimpleNamespace(
        prompt=[1] * prompt, output_ids=[2] * output, loop_trigger=loop, request=request
    )


def test_nothing_is_published_before_the_first_snapshot() -> None:
    assert EngineCounters().latest() == EngineStats()


def test_publishing_is_throttled_only_while_busy() -> None:
    counters = EngineCounters()
    assert counters.due(busy=True)  # never published
    counters._published_at = time.monotonic()
    assert not counters.due(busy=True)
    assert counters.due(busy=False)
    counters.refresh_soon()
    assert counters.due(busy=True)
    counters._published_at = time.monotonic() - STATS_PERIOD_S
    assert counters.due(busy=True)


def test_retired_sequences_are_counted_with_their_loops() -> None:
    counters = EngineCounters()
    counters._published_at = time.monotonic()
    counters.retire(retired(5, 3))
    counters.retire(retired(7, 8, loop="token_run_len_8"))
    assert counters.due(busy=True)  # a retirement shows in the next snapshot
    assert (counters._done_requests, counters._prompt_tokens) == (2, 12)
    assert counters._completion_tokens == 11
    assert counters._interventions[RepetitionPolicy.STRICT.value] == 1
