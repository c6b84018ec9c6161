"""Sampling filters and RequestSampler on hand-made logits."""

from __future__ import annotations

import math
from collections import Counter

import mlx.core as mx
import pytest

from vllm_mlx.engine.sampling import (
    RequestSampler,
    log_softmax,
    min_p_filter,
    sample_rows,
    top_k_filter,
    top_p_filter,
)
from vllm_mlx.engine.types import SamplingParams

VOCAB = 8
# Probabilities in a scrambled order, so index bookkeeping is exercised.
PROBS = [0.05, 0.4, 0.02, 0.2, 0.15, 0.1, 0.05, 0.03]
LOGITS = mx.array([[math.log(p) for p in PROBS]])


def _kept(filtered: mx.array) -> set[int]:
    row = filtered[0].tolist()
    return {i for i, v in enumerate(row) if v != float("-inf")}


def _sampler(prompt: tuple[int, ...] = (), vocab: int = VOCAB, **kwargs: object) -> RequestSampler:
    kwargs.setdefault("max_tokens", 100)
    return RequestSampler(SamplingParams(**kwargs), prompt, vocab)  # type: ignore[arg-type]


def _draws(sampler: RequestSampler, logits: mx.array, n: int) -> list[int]:
    return [int(sampler.sample(logits, []).token.item()) for _ in range(n)]


# -- filters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "kept"),
    [
        (2, {1, 3}),
        (3, {1, 3, 4}),
        (5, {0, 1, 3, 4, 5, 6}),  # 0.05 appears twice: both ties with the 5th survive
    ],
)
def test_top_k_keeps_k_largest(k: int, kept: set[int]) -> None:
    assert _kept(top_k_filter(LOGITS, k)) == kept


@pytest.mark.parametrize("k", [0, -1, VOCAB, VOCAB + 5])
def test_top_k_disabled(k: int) -> None:
    assert mx.array_equal(top_k_filter(LOGITS, k), LOGITS)


def test_top_k_one_keeps_only_the_argmax() -> None:
    assert _kept(top_k_filter(LOGITS, 1)) == {1}


def test_top_k_keeps_surviving_values_unchanged() -> None:
    out = top_k_filter(LOGITS, 2)[0].tolist()
    assert out[1] == pytest.approx(math.log(0.4))
    assert out[3] == pytest.approx(math.log(0.2))


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.0, {1}),  # the best token always survives
        (0.3, {1}),  # 0.4 already reaches 0.3
        (0.5, {1, 3}),  # 0.4 < 0.5 <= 0.6
        (0.7, {1, 3, 4}),  # 0.6 < 0.7 <= 0.75
        (0.8, {1, 3, 4, 5}),  # 0.75 < 0.8 <= 0.85
        (0.99, set(range(VOCAB))),
    ],
)
def test_top_p_keeps_smallest_set_reaching_p(p: float, kept: set[int]) -> None:
    assert _kept(top_p_filter(LOGITS, p)) == kept


def test_top_p_one_is_disabled() -> None:
    assert mx.array_equal(top_p_filter(LOGITS, 1.0), LOGITS)


@pytest.mark.parametrize(
    ("min_p", "kept"),
    [
        (0.6, {1}),  # threshold 0.24
        (0.45, {1, 3}),  # threshold 0.18
        (0.3, {1, 3, 4}),  # threshold 0.12
        (0.2, {1, 3, 4, 5}),  # threshold 0.08
        (0.01, set(range(VOCAB))),
    ],
)
def test_min_p_drops_tokens_below_fraction_of_best(min_p: float, kept: set[int]) -> None:
    assert _kept(min_p_filter(LOGITS, min_p)) == kept


def test_min_p_zero_is_disabled() -> None:
    assert mx.array_equal(min_p_filter(LOGITS, 0.0), LOGITS)


def test_log_softmax_normalises() -> None:
    out = log_softmax(mx.array([[1.0, 2.0, 3.0, -4.0]]))
    assert mx.exp(out).sum().item() == pytest.approx(1.0, abs=1e-6)
    assert out[0, 2].item() == pytest.approx(
        3.0 - math.log(sum(math.exp(x) for x in (1, 2, 3, -4)))
    )


# -- RequestSampler ---------------------------------------------------------------


def test_greedy_is_argmax() -> None:
    mx.random.seed(0)
    sampler = _sampler(vocab=50, temperature=0.0)
    for _ in range(20):
        logits = mx.random.normal((1, 50))
        out = sampler.sample(logits, [])
        assert out.token.shape == (1,)
        assert out.token.dtype == mx.int32
        assert out.token.item() == mx.argmax(logits, axis=-1).item()


def test_same_seed_same_draws() -> None:
    logits = mx.zeros((1, 50))
    a = _draws(_sampler(vocab=50, seed=7), logits, 40)
    b = _draws(_sampler(vocab=50, seed=7), logits, 40)
    assert a == b
    assert len(set(a)) > 10  # it really samples


def test_different_seeds_differ() -> None:
    logits = mx.zeros((1, 50))
    a = _draws(_sampler(vocab=50, seed=7), logits, 40)
    b = _draws(_sampler(vocab=50, seed=8), logits, 40)
    assert a != b
    assert sum(x == y for x, y in zip(a, b, strict=True)) < 10


def test_unseeded_samplers_differ() -> None:
    logits = mx.zeros((1, 50))
    assert _draws(_sampler(vocab=50), logits, 30) != _draws(_sampler(vocab=50), logits, 30)


def test_low_temperature_is_nearly_greedy() -> None:
    logits = mx.array([[0.0, 1.0, 2.0, 1.5]])
    assert set(_draws(_sampler(vocab=4, temperature=0.01, seed=1), logits, 200)) == {2}


def test_high_temperature_flattens_distribution() -> None:
    logits = mx.array([[0.0, 1.0, 2.0, 1.5]])
    n = 1000
    counts = Counter(_draws(_sampler(vocab=4, temperature=2.0, seed=3), logits, n))
    scaled = [math.exp(x / 2.0) for x in (0.0, 1.0, 2.0, 1.5)]
    expected = [s / sum(scaled) for s in scaled]
    for token, p in enumerate(expected):
        assert counts[token] / n == pytest.approx(p, abs=0.05)
    # At temperature 1 the best token is clearly more frequent than at 2.
    cold = Counter(_draws(_sampler(vocab=4, temperature=1.0, seed=3), logits, n))
    assert cold[2] > counts[2] + 50


def test_sampler_top_k_restricts_draws() -> None:
    draws = _draws(_sampler(top_k=2, seed=5), LOGITS, 300)
    assert set(draws) == {1, 3}


def test_sampler_top_p_restricts_draws() -> None:
    draws = _draws(_sampler(top_p=0.7, seed=5), LOGITS, 300)
    assert set(draws) == {1, 3, 4}


def test_sampler_min_p_restricts_draws() -> None:
    draws = _draws(_sampler(min_p=0.45, seed=5), LOGITS, 300)
    assert set(draws) == {1, 3}


def test_top_k_applies_after_temperature_and_with_top_p() -> None:
    draws = _draws(_sampler(temperature=1.5, top_k=3, top_p=0.6, seed=2), LOGITS, 300)
    assert set(draws) <= {1, 3, 4}
    assert 1 in draws


def test_logit_bias_forces_a_token() -> None:
    for params in ({"temperature": 0.0}, {"temperature": 1.0, "seed": 4}):
        sampler = _sampler(logit_bias=((6, 100.0),), **params)
        assert set(_draws(sampler, LOGITS, 50)) == {6}


def test_negative_logit_bias_bans_the_argmax() -> None:
    sampler = _sampler(temperature=0.0, logit_bias=((1, -100.0),))
    assert _draws(sampler, LOGITS, 1) == [3]


def test_frequency_penalty_alternates_greedy_choice() -> None:
    logits = mx.array([[5.0, 4.9, 0.0, 0.0]])
    sampler = _sampler(vocab=4, temperature=0.0, frequency_penalty=0.2)
    # 0 → (4.8 vs 4.9) 1 → (4.8 vs 4.7) 0 → (4.6 vs 4.7) 1 ...
    assert _draws(sampler, logits, 6) == [0, 1, 0, 1, 0, 1]


def test_presence_penalty_applies_once() -> None:
    logits = mx.array([[5.0, 4.5, 0.0, 0.0]])
    sampler = _sampler(vocab=4, temperature=0.0, presence_penalty=1.0)
    # Both tokens are penalised by 1 once seen, however often: 0, 1, then 0 forever.
    assert _draws(sampler, logits, 5) == [0, 1, 0, 0, 0]


def test_samplers_do_not_share_penalty_state() -> None:
    logits = mx.array([[5.0, 4.9, 0.0, 0.0]])
    params = SamplingParams(max_tokens=10, temperature=0.0, frequency_penalty=0.2)
    a = RequestSampler(params, (), 4)
    b = RequestSampler(params, (), 4)
    assert _draws(a, logits, 5) == [0, 1, 0, 1, 0]
    assert _draws(b, logits, 2) == [0, 1]  # b starts fresh


def test_repetition_penalty_covers_prompt() -> None:
    logits = mx.array([[3.0, 2.9, 0.0, 0.0]])
    plain = _sampler(vocab=4, temperature=0.0)
    assert _draws(plain, logits, 1) == [0]
    penalised = _sampler(prompt=(0, 0, 2), vocab=4, temperature=0.0, repetition_penalty=1.2)
    assert _draws(penalised, logits, 1) == [1]  # 3.0 / 1.2 = 2.5 < 2.9


def test_logprobs_absent_unless_requested() -> None:
    out = _sampler(seed=1).sample(LOGITS, [])
    assert out.logprob is None
    assert out.top_ids is None
    assert out.top_logprobs is None
    assert out.arrays() == [out.token]


def test_logprob_without_alternatives() -> None:
    out = _sampler(seed=1, logprobs=True).sample(LOGITS, [])
    assert out.logprob is not None
    assert out.logprob.shape == (1,)
    assert out.top_ids is None
    assert len(out.arrays()) == 2
    assert out.logprob.item() == pytest.approx(math.log(PROBS[out.token.item()]), abs=1e-5)


@pytest.mark.parametrize("k", [1, 3, VOCAB])
def test_top_logprobs_shapes_and_order(k: int) -> None:
    out = _sampler(temperature=0.0, logprobs=True, top_logprobs=k).sample(LOGITS, [])
    assert out.top_ids is not None and out.top_logprobs is not None
    assert out.top_ids.shape == (1, k)
    assert out.top_logprobs.shape == (1, k)
    values = out.top_logprobs[0].tolist()
    assert values == sorted(values, reverse=True)
    assert sum(math.exp(v) for v in values) <= 1.0 + 1e-5
    assert out.top_ids[0, 0].item() == 1 == out.token.item()
    assert out.logprob is not None
    assert out.logprob.item() == pytest.approx(values[0])
    for token, value in zip(out.top_ids[0].tolist(), values, strict=True):
        assert value == pytest.approx(math.log(PROBS[token]), abs=1e-5)
    if k == VOCAB:
        assert sum(math.exp(v) for v in values) == pytest.approx(1.0, abs=1e-5)


def test_extra_processor_sees_history_and_can_mask() -> None:
    seen: list[list[int]] = []

    def only_token_7(history: list[int], logits: mx.array) -> mx.array:
        seen.append(list(history))
        mask = mx.arange(logits.shape[-1]) == 7
        return mx.where(mask, logits, float("-inf"))

    params = SamplingParams(max_tokens=5, temperature=1.0, seed=0)
    sampler = RequestSampler(params, (), VOCAB, [only_token_7])
    assert sampler.needs_history
    assert not _sampler().needs_history
    assert int(sampler.sample(LOGITS, [4, 2]).token.item()) == 7
    assert seen == [[4, 2]]


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_any_integer_seed_is_usable(seed: int) -> None:
    logits = mx.zeros((1, 50))
    a = _draws(_sampler(vocab=50, seed=seed), logits, 10)
    assert a == _draws(_sampler(vocab=50, seed=seed), logits, 10)


def test_sample_rows_matches_each_rows_own_sampler() -> None:
    """Batched greedy rows (with and without a bias) give what their samplers give."""
    logits = mx.random.normal((6, VOCAB), key=mx.random.key(3))
    best = [int(i) for i in mx.argmax(logits, axis=-1).tolist()]  # type: ignore[union-attr]

    def make() -> list[RequestSampler]:
        return [
            _sampler(temperature=0.0),
            _sampler(temperature=0.0, logit_bias=((best[1], -100.0),)),
            _sampler(temperature=0.0, logit_bias=((5, 30.0), (5, 1.0))),  # a repeated id adds
            _sampler(temperature=0.0, logprobs=True),  # not batchable: its own chain
            _sampler(temperature=0.7, seed=11),
            _sampler(temperature=0.0, presence_penalty=1.0),
        ]

    batched = sample_rows(make(), logits, [[] for _ in range(6)])
    single = [s.sample(logits[i : i + 1], []) for i, s in enumerate(make())]
    got = [int(out.token.item()) for out in batched]
    assert got == [int(out.token.item()) for out in single]
    assert got[0] == best[0] and got[1] != best[1] and got[2] == 5
    assert batched[3].logprob is not None
