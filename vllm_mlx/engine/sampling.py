"""Sampling as a chain of small pure functions, one chain per request."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx

from vllm_mlx.engine.logits import LogitBias, build_processors
from vllm_mlx.engine.types import LogitsProcessor, SamplingParams

_NEG_INF = float("-inf")


def top_k_filter(logits: mx.array, k: int) -> mx.array:
    """Keep the k largest logits."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = mx.sort(logits, axis=-1)[..., -k, None]
    return mx.where(logits < kth, _NEG_INF, logits)


def top_p_filter(logits: mx.array, p: float) -> mx.array:
    """Keep the smallest set of tokens whose probability mass reaches p."""
    if p >= 1.0:
        return logits
    order = mx.argsort(-logits, axis=-1)
    sorted_probs = mx.take_along_axis(mx.softmax(logits, axis=-1), order, axis=-1)
    # A token is dropped when the mass before it already exceeds p; the top one stays.
    drop_sorted = (mx.cumsum(sorted_probs, axis=-1) - sorted_probs) > p
    drop = mx.take_along_axis(drop_sorted, mx.argsort(order, axis=-1), axis=-1)
    return mx.where(drop, _NEG_INF, logits)


def min_p_filter(logits: mx.array, min_p: float) -> mx.array:
    """Drop tokens whose probability is below min_p times the best one's."""
    if min_p <= 0.0:
        return logits
    threshold = mx.max(logits, axis=-1, keepdims=True) + math.log(min_p)
    return mx.where(logits < threshold, _NEG_INF, logits)


def log_softmax(logits: mx.array) -> mx.array:
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


@dataclass(frozen=True)
class SampleOutput:
    """Lazy results of one sampling step; the engine evaluates them together."""

    token: mx.array  # shape (1,), int32
    logprob: mx.array | None = None  # shape (1,), chosen token's logprob
    top_ids: mx.array | None = None  # shape (1, k), best alternatives
    top_logprobs: mx.array | None = None  # shape (1, k)

    def arrays(self) -> list[mx.array]:
        return [
            a for a in (self.token, self.logprob, self.top_ids, self.top_logprobs) if a is not None
        ]


def sample_rows(
    samplers: Sequence[RequestSampler], logits: mx.array, histories: Sequence[list[int]]
) -> list[SampleOutput]:
    """Sample every row of (B, vocab) logits with its own sampler.

    Plain greedy rows share one argmax over the batch (their logit biases applied
    with one scatter) instead of a chain of small ops each: the result is the same,
    row by row, as their own samplers would give.
    """
    greedy = [i for i, s in enumerate(samplers) if s.plain_greedy]
    outs: list[SampleOutput | None] = [None] * len(samplers)
    if len(greedy) > 1:
        rows = logits if len(greedy) == len(samplers) else logits[mx.array(greedy)]
        rows = rows.astype(mx.float32)
        biased = [(j, b) for j, i in enumerate(greedy) if (b := samplers[i].bias) is not None]
        if biased:
            at = mx.concatenate([mx.full(b.ids.shape, j, mx.int32) for j, b in biased])
            ids = mx.concatenate([b.ids for _, b in biased])
            rows = rows.at[at, ids].add(mx.concatenate([b.values for _, b in biased]))
        tokens = mx.argmax(rows, axis=-1).astype(mx.int32)
        for j, i in enumerate(greedy):
            outs[i] = SampleOutput(tokens[j : j + 1])
    return [
        out if out is not None else samplers[i].sample(logits[i : i + 1], histories[i])
        for i, out in enumerate(outs)
    ]


class RequestSampler:
    """Logits processors + sampler for one sequence. Never shared between requests."""

    def __init__(
        self,
        params: SamplingParams,
        prompt_ids: Sequence[int],
        vocab_size: int,
        extra: Sequence[LogitsProcessor] = (),
    ) -> None:
        self._params = params
        self._builtin = build_processors(params, prompt_ids, vocab_size)
        self._extra = list(extra)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        self._key = mx.random.key(seed % 2**64)  # MLX keys take unsigned 64-bit seeds

    @property
    def needs_history(self) -> bool:
        """Extra processors read Python token history, so the pipeline must sync."""
        return bool(self._extra)

    @property
    def plain_greedy(self) -> bool:
        """Greedy with at most a logit bias and no logprobs: batchable with its peers."""
        biases = all(isinstance(proc, LogitBias) for proc in self._builtin)
        return self._params.greedy and not self._params.logprobs and not self._extra and biases

    @property
    def bias(self) -> LogitBias | None:
        return next((p for p in self._builtin if isinstance(p, LogitBias)), None)

    def sample(self, logits: mx.array, history: list[int]) -> SampleOutput:
        """Sample the next token from logits of shape (1, vocab)."""
        logits = logits.astype(mx.float32)
        for proc in self._builtin:
            logits = proc(logits)
        for extra in self._extra:
            logits = extra(history, logits)
        token = self._choose(logits)
        for proc in self._builtin:
            proc.observe(token)
        if not self._params.logprobs:
            return SampleOutput(token)
        logprobs = log_softmax(logits)
        chosen = mx.take_along_axis(logprobs, token[:, None], axis=-1)[:, 0]
        k = self._params.top_logprobs
        if k <= 0:
            return SampleOutput(token, chosen)
        top_ids = mx.argsort(-logprobs, axis=-1)[:, :k]
        return SampleOutput(token, chosen, top_ids, mx.take_along_axis(logprobs, top_ids, axis=-1))

    def _choose(self, logits: mx.array) -> mx.array:
        p = self._params
        if p.greedy:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        logits = logits / p.temperature
        logits = top_k_filter(logits, p.top_k)
        logits = top_p_filter(logits, p.top_p)
        logits = min_p_filter(logits, p.min_p)
        self._key, sub = mx.random.split(self._key)
        return mx.random.categorical(logits, axis=-1, key=sub).astype(mx.int32)
