"""Logits processors: bias and penalties change exactly the logits they should."""

from __future__ import annotations

import mlx.core as mx
import pytest

from vllm_mlx.engine.logits import LogitBias, Penalties, build_processors
from vllm_mlx.engine.types import SamplingParams

V = 6


def _params(**kwargs: object) -> SamplingParams:
    kwargs.setdefault("max_tokens", 10)
    return SamplingParams(**kwargs)  # type: ignore[arg-type]


def _row(a: mx.array) -> list[float]:
    return a[0].tolist()


def _observe(proc: Penalties | LogitBias, *tokens: int) -> None:
    for t in tokens:
        proc.observe(mx.array([t], dtype=mx.int32))


def test_no_processors_by_default() -> None:
    assert build_processors(_params(), [1, 2, 3], V) == []


def test_chain_order_penalties_then_bias() -> None:
    chain = build_processors(_params(presence_penalty=0.5, logit_bias=((1, 2.0),)), [], V)
    assert [type(p) for p in chain] == [Penalties, LogitBias]


@pytest.mark.parametrize(
    "kwargs",
    [{"repetition_penalty": 1.1}, {"presence_penalty": -0.5}, {"frequency_penalty": 0.1}],
)
def test_any_penalty_builds_penalties(kwargs: dict[str, float]) -> None:
    assert [type(p) for p in build_processors(_params(**kwargs), [], V)] == [Penalties]


def test_logit_bias_adds_per_token() -> None:
    bias = LogitBias(((0, 1.5), (4, -3.0)), V)
    out = bias(mx.ones((1, V)))
    assert _row(out) == pytest.approx([2.5, 1.0, 1.0, 1.0, -2.0, 1.0])
    _observe(bias, 0)
    assert _row(bias(mx.ones((1, V)))) == pytest.approx([2.5, 1.0, 1.0, 1.0, -2.0, 1.0])


def test_frequency_penalty_scales_with_count() -> None:
    proc = Penalties(_params(frequency_penalty=0.5), [], V)
    _observe(proc, 2, 2, 2, 5)
    out = _row(proc(mx.zeros((1, V))))
    assert out == pytest.approx([0.0, 0.0, -1.5, 0.0, 0.0, -0.5])


def test_presence_penalty_is_flat() -> None:
    proc = Penalties(_params(presence_penalty=0.7), [], V)
    _observe(proc, 2, 2, 2, 5)
    assert _row(proc(mx.zeros((1, V)))) == pytest.approx([0, 0, -0.7, 0, 0, -0.7])


def test_presence_and_frequency_combine() -> None:
    proc = Penalties(_params(presence_penalty=1.0, frequency_penalty=0.25), [], V)
    _observe(proc, 1, 3, 3)
    out = _row(proc(mx.full((1, V), 2.0)))
    assert out == pytest.approx([2.0, 0.75, 2.0, 0.5, 2.0, 2.0])


def test_negative_presence_penalty_encourages_repeats() -> None:
    proc = Penalties(_params(presence_penalty=-1.0), [], V)
    _observe(proc, 4)
    assert _row(proc(mx.zeros((1, V))))[4] == pytest.approx(1.0)


def test_additive_penalties_ignore_prompt() -> None:
    proc = Penalties(_params(presence_penalty=1.0, frequency_penalty=1.0), [0, 1, 1, 2], V)
    assert _row(proc(mx.zeros((1, V)))) == pytest.approx([0.0] * V)


def test_repetition_penalty_on_prompt_tokens() -> None:
    proc = Penalties(_params(repetition_penalty=2.0), [1, 3, 3], V)
    logits = mx.array([[4.0, 4.0, 4.0, -4.0, -4.0, 0.0]])
    # Positive logits are divided, negative ones multiplied; unseen tokens untouched.
    assert _row(proc(logits)) == pytest.approx([4.0, 2.0, 4.0, -8.0, -4.0, 0.0])


def test_repetition_penalty_grows_set_with_output_not_strength() -> None:
    proc = Penalties(_params(repetition_penalty=2.0), [1], V)
    _observe(proc, 4, 4, 4)
    logits = mx.full((1, V), 4.0)
    assert _row(proc(logits)) == pytest.approx([4.0, 2.0, 4.0, 4.0, 2.0, 4.0])


def test_repetition_penalty_ignores_out_of_vocab_prompt_ids() -> None:
    proc = Penalties(_params(repetition_penalty=2.0), [-1, V, V + 10, 0], V)
    assert _row(proc(mx.full((1, V), 4.0))) == pytest.approx([2.0, 4.0, 4.0, 4.0, 4.0, 4.0])


def test_penalty_instances_are_independent() -> None:
    params = _params(frequency_penalty=1.0, repetition_penalty=2.0)
    a = Penalties(params, [0], V)
    b = Penalties(params, [0], V)
    _observe(a, 3, 3)
    assert _row(b(mx.full((1, V), 4.0))) == pytest.approx([2.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    assert _row(a(mx.full((1, V), 4.0))) == pytest.approx([2.0, 4.0, 4.0, 0.0, 4.0, 4.0])
