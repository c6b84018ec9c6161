"""The step cost model: priors, online fits, and the chunk that fits a time budget."""

from __future__ import annotations

import pytest

from vllm_mlx.engine.step_cost import ChunkShape, StepCostModel


def _true_prefill(chunks: list[ChunkShape]) -> float:
    """A machine unlike the priors' (a GPU-ish one: 10x cheaper tokens, costlier passes)."""
    live = [c for c in chunks if c.tokens]
    return (
        0.05
        + sum(2e-4 * c.tokens + 4e-7 * c.tokens * (c.start + c.tokens / 2) for c in live)
        + sum(1e-6 * c.start for c in live)
    )


def test_cost_grows_with_tokens_and_context() -> None:
    model = StepCostModel()
    assert model.prefill_s([ChunkShape(0, 64)]) < model.prefill_s([ChunkShape(0, 512)])
    assert model.prefill_s([ChunkShape(0, 64)]) < model.prefill_s([ChunkShape(6000, 64)])
    assert model.decode_s(4, 400) < model.decode_s(16, 1600)
    assert model.decode_s(0, 0) == 0.0 and model.prefill_s([]) == 0.0


def test_prefill_fit_learns_another_machine() -> None:
    model = StepCostModel()
    shapes = [ChunkShape(s, n) for s in (0, 700, 2000, 4000, 6000) for n in (8, 64, 256, 512)]
    for _ in range(3):
        for shape in shapes:
            model.observe_prefill([shape], _true_prefill([shape]))
    for shape in (ChunkShape(3000, 100), ChunkShape(5000, 16), ChunkShape(100, 400)):
        assert model.prefill_s([shape]) == pytest.approx(_true_prefill([shape]), rel=0.1)


def test_decode_fit_learns_a_slower_pass() -> None:
    model = StepCostModel()
    for rows in (1, 2, 4, 8, 16):
        for ctx in (100, 500, 2000):
            model.observe_decode(rows, rows * ctx, 0.05 + 0.01 * rows + 1e-5 * rows * ctx)
    assert model.decode_s(6, 6 * 800) == pytest.approx(0.05 + 0.06 + 1e-5 * 4800, rel=0.1)


def test_max_tokens_is_the_largest_chunk_within_the_budget() -> None:
    model = StepCostModel()
    planned = [ChunkShape(0, 100)]
    for start, budget in ((0, 0.5), (5000, 0.8), (5000, 3.0)):
        n = model.max_tokens(planned, start, 512, budget)
        assert 0 < n <= 512
        assert model.prefill_s([*planned, ChunkShape(start, n)]) <= budget
        if n < 512:
            assert model.prefill_s([*planned, ChunkShape(start, n + 1)]) > budget
    assert model.max_tokens([], 6000, 512, 0.001) == 0  # not even one token fits


def test_wild_measurements_do_not_make_costs_negative() -> None:
    model = StepCostModel()
    model.observe_prefill([ChunkShape(0, 512)], 0.001)
    model.observe_prefill([ChunkShape(4000, 8)], 5.0)
    assert model.prefill_s([ChunkShape(0, 1)]) >= 0.0
    assert model.prefill_s([ChunkShape(6000, 64)]) > model.prefill_s([ChunkShape(0, 64)])
