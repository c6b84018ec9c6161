"""Sampling as a chain of small pure functions, one chain per request."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx

from vllm_mlx.engine.logits import build_processors
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
