"""Forward passes of an mlx-lm model (or a VLM's language model) over paged KV. The engine's
only door to the model: a vision model's image features are merged here at prefill."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import mlx.core as mx
from mlx_lm.models.cache import KVCache, make_prompt_cache

from vllm_mlx.backend import cpu_math
from vllm_mlx.backend.fusion import cpu_math_pass, fuse_decode_ops, unfuse, use_cpu_math
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.paged import (
    BatchLayout,
    PagedKVStorage,
    build_layout,
    padded_prefill_layout,
    pool_view_fits,
    slot_layout,
)
from vllm_mlx.backend.vision import PromptMedia

log = logging.getLogger(__name__)


# A padded batch may spend at most this share of its tokens on padding.
_MAX_PADDING = 0.25


class PrefillSpan(NamedTuple):
    """Tokens at positions [start, start + len(token_ids)) of one sequence."""

    token_ids: Sequence[int]
    block_table: Sequence[int]
    start: int
    media: PromptMedia | None = None  # the prompt's images (a vision model's sequence)


def _padding_groups(chunks: Sequence[PrefillSpan]) -> list[list[PrefillSpan]]:
    """Chunks grouped by length (longest first) so that padding stays small."""
    groups: list[list[PrefillSpan]] = []
    for chunk in sorted(chunks, key=lambda c: len(c.token_ids), reverse=True):
        group = groups[-1] if groups else None
        if group is not None:
            longest = len(group[0].token_ids)
            real = sum(len(c.token_ids) for c in group) + len(chunk.token_ids)
            if longest * (len(group) + 1) <= real * (1 + _MAX_PADDING):
                group.append(chunk)
                continue
        groups.append([chunk])
    return groups


class UnsupportedModelError(RuntimeError):
    """The architecture keeps state other than a plain KV cache (sliding, SSM)."""


class ModelRunner:
    """Runs batched prefill and decode passes; one instance per loaded model.

    The KV pools are updated in place only while no other pass that reads them is
    in flight (a pending reader of an older pool version makes MLX copy the pool):
    prefill evaluates before it returns, and the engine launches a decode pass
    only after the previous one has finished.
    """

    def __init__(self, loaded: LoadedModel, block_size: int) -> None:
        self._model = loaded.model
        caches = make_prompt_cache(self._model)
        if not all(type(c) is KVCache for c in caches):
            kinds = sorted({type(c).__name__ for c in caches})
            raise UnsupportedModelError(
                f"{loaded.model_id} uses {', '.join(kinds)}; only standard attention is paged"
            )
        self.block_size = block_size
        self.storage = PagedKVStorage(len(caches), block_size)
        self.vocab_size = loaded.vocab_size
        self.vision = loaded.vision  # None: a text model, called the mlx-lm way
        if loaded.device == "cpu" and self.vision is None:
            self._fuse_decode_ops()  # mlx-vlm's modules are not the mlx-lm ones it swaps

    def bytes_per_token(self) -> int:
        """KV bytes one token takes across all layers (creates the pools)."""
        self.storage.ensure_blocks(1)
        self.decode([0], [[0]], [0])
        per_slot = self.storage.nbytes() // (self.storage.capacity_blocks * self.block_size)
        return max(1, per_slot)

    def prefill(
        self,
        token_ids: Sequence[int],
        block_table: Sequence[int],
        start: int,
        media: PromptMedia | None = None,
    ) -> None:
        """Write KV for tokens at positions [start, start + len); no logits."""
        self.storage.flush_slots()  # a prefix it reads may hold decoded tokens
        layout = build_layout([block_table], [start], len(token_ids), self.block_size)
        tokens = mx.array([list(token_ids)], dtype=mx.int32)
        self._forward(tokens, layout, [(start, media)])
        mx.eval(self.storage.state())

    def prefill_batch(self, chunks: Sequence[PrefillSpan]) -> None:
        """Several prefill chunks; similar lengths share one padded forward."""
        self.storage.flush_slots()
        for group in _padding_groups(chunks):
            if len(group) == 1:
                self.prefill(*group[0])
                continue
            tables = [c.block_table for c in group]
            starts = [c.start for c in group]
            lengths = [len(c.token_ids) for c in group]
            scratch = self.storage.scratch_slot
            layout = padded_prefill_layout(tables, starts, lengths, self.block_size, scratch)
            longest = max(lengths)
            rows = [list(c.token_ids) + [0] * (longest - len(c.token_ids)) for c in group]
            media = [(c.start, c.media) for c in group]
            self._forward(mx.array(rows, dtype=mx.int32), layout, media)
            mx.eval(self.storage.state())

    def decode(
        self,
        tokens: Sequence[int] | mx.array,
        block_tables: Sequence[Sequence[int]],
        positions: Sequence[int],
        row_keys: Sequence[Hashable] | None = None,
        rope_deltas: Sequence[int] | None = None,
    ) -> mx.array:
        """Lazy next-token logits (B, vocab) for one new token per row.

        ``tokens`` may be a lazy (B,) array: the previous step's samples, so the
        next graph is built before they are read back. ``row_keys`` name the rows'
        sequences across steps: a sequence that decodes on keeps its dense slot
        (backend.slots) instead of gathering its context from the pool every step.
        ``rope_deltas``: each row's M-RoPE delta (PromptMedia.rope_delta; 0 for text).
        """
        ids = tokens if isinstance(tokens, mx.array) else mx.array(list(tokens), dtype=mx.int32)
        ids = ids.astype(mx.int32)
        step = None
        # A lone row whose blocks lie in a run reads a view of the pool; any other
        # row set keeps dense slots (gathering a scattered lone row every step cost
        # ~10 % of its step).
        if row_keys is not None and (
            len(row_keys) > 1 or not pool_view_fits(block_tables[0], positions[0], self.block_size)
        ):
            step = self.storage.plan_slots(row_keys, block_tables, positions)
        if step is None:
            self.storage.flush_slots()
            layout = build_layout(block_tables, positions, 1, self.block_size)
            rope = self._decode_positions(positions, rope_deltas, None)
            return self._forward(ids[:, None], layout, rope=rope)[:, -1, :]
        layout = slot_layout(step)
        fed = ids if step.feed is None else ids[step.feed]
        rope = self._decode_positions(positions, rope_deltas, step.feed)
        logits = self._forward(fed[:, None], layout, rope=rope)[:, -1, :]
        return logits if step.back is None else logits[step.back]

    def _decode_positions(
        self, positions: Sequence[int], deltas: Sequence[int] | None, feed: mx.array | None
    ) -> mx.array | None:
        """M-RoPE ids of a decode step in the order rows are fed; None: 1-D RoPE."""
        if self.vision is None or not self.vision.mrope:
            return None
        pos = mx.array(list(positions), dtype=mx.int32)
        rope = self.vision.decode_positions(pos, deltas or [0] * len(positions))
        return rope if feed is None else rope[:, feed]

    def limit_decode_slots(self, max_tokens: int) -> None:
        """Bound the dense decode slots (rows x columns) to ``max_tokens`` tokens of KV."""
        self.storage.slots.max_tokens = max_tokens

    def copy_block(self, src: int, dst: int, num_tokens: int) -> None:
        self.storage.copy_block(src, dst, num_tokens)

    def ensure_blocks(self, num_blocks: int) -> None:
        self.storage.ensure_blocks(num_blocks)

    def _fuse_decode_ops(self) -> None:
        """Compile decode's small ops and route attention and SwiGLU through
        backend.cpu_math (see backend.fusion), and build the kernels now."""
        modules, functions = fuse_decode_ops(self._model), use_cpu_math(self._model)
        swaps = modules + functions
        if not swaps:
            return
        start = time.monotonic()
        try:
            self.storage.ensure_blocks(1)
            for rows in (1, 2):  # one row and a batch need different kernels
                logits = self.decode([0] * rows, [[0]] * rows, [0] * rows)
                mx.eval(logits, self.storage.state())
            if functions:
                x = mx.zeros((1, 1, 128, 8))  # attention's own kernels
                mx.eval(cpu_math.attention(x, x, x, 1.0, "causal"))
        except Exception as exc:  # a backend that cannot compile: run the plain ops
            unfuse(swaps)
            log.warning("decode ops could not be compiled (%s); running them unfused", exc)
            return
        log.info(
            "CPU: %d norm/rope modules and %d attention/SwiGLU functions run as compiled "
            "kernels (ready in %.1f s; the first start on a machine builds them, later ones "
            "load them from MLX's cache)",
            len(modules),
            len(functions),
            time.monotonic() - start,
        )

    def _forward(
        self,
        tokens: mx.array,
        layout: BatchLayout,
        media: Sequence[tuple[int, PromptMedia | None]] | None = None,
        rope: mx.array | None = None,
    ) -> mx.array:
        """Logits of one pass; ``media``: each prefill row's (start, images) for a VLM."""
        if self.vision is None:
            with cpu_math_pass():
                return self._model(tokens, cache=self.storage.layers(layout))
        embeds = None
        if media is not None:
            embeds, rope = self.vision.chunk_inputs(tokens, media)
        return self.vision.forward(tokens, self.storage.layers(layout), embeds, rope)
