"""Forward passes of an mlx-lm model. The only place the engine reaches mlx-lm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from vllm_mlx.backend.model import LoadedModel

KVCache = list[Any]  # mlx-lm per-layer cache objects


class ModelRunner:
    """Runs prefill and decode steps for one sequence at a time."""

    def __init__(self, loaded: LoadedModel) -> None:
        self._model = loaded.model
        self.vocab_size = _vocab_size(loaded)

    def new_cache(self) -> KVCache:
        return make_prompt_cache(self._model)

    def prefill(self, token_ids: Sequence[int], cache: KVCache) -> None:
        """Extend the cache with tokens whose logits are not needed."""
        self._model(mx.array(token_ids, dtype=mx.int32)[None], cache=cache)
        # Evaluate only the cache: lazy evaluation then skips the unused lm_head.
        mx.eval([c.state for c in cache])

    def logits(self, tokens: mx.array, cache: KVCache) -> mx.array:
        """Lazy next-token logits, shape (1, vocab), for input tokens of shape (1, L)."""
        return self._model(tokens, cache=cache)[:, -1, :]


def _vocab_size(loaded: LoadedModel) -> int:
    config = loaded.config.get("text_config", loaded.config)
    size = config.get("vocab_size")
    if isinstance(size, int):
        return size
    probe = loaded.model(mx.array([[0]], dtype=mx.int32))
    return int(probe.shape[-1])
