"""Plain mlx-lm generation, the yardstick the benchmark compares the server with."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.generate import stream_generate
from mlx_lm.sample_utils import make_sampler

from vllm_mlx.backend.model import LoadedModel


def _mask_tokens(ids: Iterable[int]) -> Any:
    banned = sorted(set(ids))

    def process(tokens: Any, logits: mx.array) -> mx.array:
        valid = [i for i in banned if i < logits.shape[-1]]
        if valid:
            logits[..., mx.array(valid)] = -mx.inf
        return logits

    return process


def reference_generate(
    loaded: LoadedModel,
    prompt_ids: Sequence[int],
    max_tokens: int,
    temperature: float = 0.0,
    ignore_eos: bool = True,
) -> Iterator[int]:
    """Yield tokens from mlx-lm's own generation loop, one per step."""
    processors = [_mask_tokens(loaded.eos_token_ids)] if ignore_eos else []
    for response in stream_generate(
        loaded.model,
        loaded.tokenizer,
        list(prompt_ids),
        max_tokens=max_tokens,
        sampler=make_sampler(temp=temperature),
        logits_processors=processors,
    ):
        yield response.token
