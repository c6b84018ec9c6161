"""Per-request logits processors: penalties and bias.

Each processor keeps its own state as lazy MLX arrays, so a step can be queued
before the previous token is read back to Python (the decode pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from vllm_mlx.engine.types import SamplingParams


class LogitBias:
    """Adds a fixed per-token bias (OpenAI ``logit_bias``)."""

    def __init__(self, bias: Sequence[tuple[int, float]], vocab_size: int) -> None:
        summed: dict[int, float] = {}
        for token, value in bias:  # one entry per token, so batched samplers add the same
            summed[token] = summed.get(token, 0.0) + value
        self.ids = mx.array(list(summed), dtype=mx.int32)
        self.values = mx.array(list(summed.values()), dtype=mx.float32)
        self._bias = mx.zeros((vocab_size,), dtype=mx.float32).at[self.ids].add(self.values)

    def __call__(self, logits: mx.array) -> mx.array:
        return logits + self._bias

    def observe(self, token: mx.array) -> None:
        pass


class Penalties:
    """OpenAI presence/frequency penalties plus the multiplicative repetition penalty.

    Presence and frequency count generated tokens only (as OpenAI defines them);
    the repetition penalty covers prompt and output, as in HF and vLLM.
    """

    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int], vocab_size: int) -> None:
        self._presence = params.presence_penalty
        self._frequency = params.frequency_penalty
        self._repetition = params.repetition_penalty
        self._counts = mx.zeros((vocab_size,), dtype=mx.float32)
        seen = mx.zeros((vocab_size,), dtype=mx.bool_)
        if prompt_ids and self._repetition != 1.0:
            valid = [t for t in prompt_ids if 0 <= t < vocab_size]
            seen = seen.at[mx.array(valid, dtype=mx.int32)].add(True) if valid else seen
        self._seen = seen

    def __call__(self, logits: mx.array) -> mx.array:
        if self._repetition != 1.0:
            penalised = mx.where(logits > 0, logits / self._repetition, logits * self._repetition)
            logits = mx.where(self._seen, penalised, logits)
        if self._frequency:
            logits = logits - self._frequency * self._counts
        if self._presence:
            logits = logits - self._presence * (self._counts > 0)
        return logits

    def observe(self, token: mx.array) -> None:
        self._counts = self._counts.at[token].add(1.0)
        if self._repetition != 1.0:
            self._seen = self._seen.at[token].add(True)


Processor = LogitBias | Penalties


def build_processors(
    params: SamplingParams, prompt_ids: Sequence[int], vocab_size: int
) -> list[Processor]:
    """The built-in processors a request asks for, in application order."""
    chain: list[Processor] = []
    if params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
        chain.append(Penalties(params, prompt_ids, vocab_size))
    if params.logit_bias:
        chain.append(LogitBias(params.logit_bias, vocab_size))
    return chain
