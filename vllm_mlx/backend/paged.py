"""Paged KV storage in MLX arrays, and the per-step cache views mlx-lm models call.

Each layer owns one K pool and one V pool of shape (slots, kv_heads, head_dim),
with slot = block_id * block_size + offset. A forward pass over a batch writes
the new tokens' K/V into their slots (scatter), then reads every sequence's K/V
through its slot list (gather) and hands it to MLX's fused attention:

    new K/V (B, H, L, D) ──scatter──► pool (slots, H, D) ──gather──► (B, H, Lmax, D)
                                                                         │
    queries (B, Hq, L, D) ─────────────────────────► scaled_dot_product_attention

Rows shorter than Lmax point their padding at slot 0 and are masked out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx

_GROW_BLOCKS = 256  # pools grow in steps of this many blocks


@dataclass(frozen=True)
class BatchLayout:
    """Where one forward pass reads and writes, as MLX arrays."""

    offsets: mx.array  # (B,) position of each row's first new token
    write_slots: mx.array  # (B*L,) slot of every new token, row-major
    gather_slots: mx.array  # (B, Lmax) slot of every key position, padded
    mask: mx.array | str | None  # (B, 1, L, Lmax) per-row causal mask; simpler when B == 1


def build_layout(
    block_tables: Sequence[Sequence[int]],
    positions: Sequence[int],
    new_tokens: int,
    block_size: int,
) -> BatchLayout:
    """Row b writes positions [positions[b], positions[b] + new_tokens) and reads all before."""
    width = max(len(t) for t in block_tables)
    tables = mx.array([list(t) + [0] * (width - len(t)) for t in block_tables], dtype=mx.int32)
    lmax = max(positions) + new_tokens
    key_pos = mx.arange(lmax, dtype=mx.int32)
    # Positions past a row's table read block 0; the causal mask hides them.
    gather = tables[:, key_pos // block_size] * block_size + key_pos % block_size
    offsets = mx.array(list(positions), dtype=mx.int32)
    query_pos = offsets[:, None] + mx.arange(new_tokens, dtype=mx.int32)[None, :]
    mask: mx.array | str | None
    if len(block_tables) == 1:
        # One row reads exactly its own positions: plain (bottom-right) causal attention.
        mask = "causal" if new_tokens > 1 else None
    else:
        mask = (key_pos[None, None, :] <= query_pos[:, :, None])[:, None, :, :]
    return BatchLayout(
        offsets=offsets,
        write_slots=mx.take_along_axis(gather, query_pos, axis=1).reshape(-1),
        gather_slots=gather,
        mask=mask,
    )


class PagedKVStorage:
    """K/V pools for every layer, created on first use and grown on demand."""

    def __init__(self, num_layers: int, block_size: int) -> None:
        self.block_size = block_size
        self.keys: list[mx.array | None] = [None] * num_layers
        self.values: list[mx.array | None] = [None] * num_layers
        self.capacity_blocks = 0

    def ensure_blocks(self, num_blocks: int) -> None:
        """Make room for block ids below ``num_blocks``."""
        if num_blocks <= self.capacity_blocks:
            return
        target = -(-num_blocks // _GROW_BLOCKS) * _GROW_BLOCKS
        extra = (target - self.capacity_blocks) * self.block_size
        for pools in (self.keys, self.values):
            for i, pool in enumerate(pools):
                if pool is not None:
                    pad = mx.zeros((extra, *pool.shape[1:]), dtype=pool.dtype)
                    pools[i] = mx.concatenate([pool, pad])
        self.capacity_blocks = target

    def copy_block(self, src: int, dst: int, num_tokens: int) -> None:
        """Copy-on-write: the first tokens of block src into block dst."""
        bs = self.block_size
        src_slots = mx.arange(src * bs, src * bs + num_tokens)
        dst_slots = mx.arange(dst * bs, dst * bs + num_tokens)
        for pools in (self.keys, self.values):
            for i, pool in enumerate(pools):
                if pool is not None:
                    rows = pool[src_slots]
                    # Evaluated first, so the scatter below can update the pool in place.
                    mx.eval(rows)
                    pool[dst_slots] = rows
                    pools[i] = pool

    def layer(self, index: int, layout: BatchLayout) -> PagedLayerCache:
        return PagedLayerCache(self, index, layout)

    def state(self) -> list[mx.array]:
        return [a for a in (*self.keys, *self.values) if a is not None]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.state())

    def _pool(self, index: int, like: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys[index] is None:
            slots = self.capacity_blocks * self.block_size
            shape = (slots, like.shape[1], like.shape[3])
            self.keys[index] = mx.zeros(shape, dtype=like.dtype)
            self.values[index] = mx.zeros(shape, dtype=like.dtype)
        k, v = self.keys[index], self.values[index]
        assert k is not None and v is not None
        return k, v


class PagedLayerCache:
    """One layer's view of the storage for one forward pass (mlx-lm cache protocol)."""

    def __init__(self, storage: PagedKVStorage, index: int, layout: BatchLayout) -> None:
        self._storage = storage
        self._index = index
        self._layout = layout
        self.offset = layout.offsets  # RoPE takes per-row offsets

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        k_pool, v_pool = self._storage._pool(self._index, keys)
        b, h, length, d = keys.shape
        k_pool[self._layout.write_slots] = keys.transpose(0, 2, 1, 3).reshape(b * length, h, d)
        v_pool[self._layout.write_slots] = values.transpose(0, 2, 1, 3).reshape(b * length, h, d)
        self._storage.keys[self._index] = k_pool
        self._storage.values[self._index] = v_pool
        gathered_k = k_pool[self._layout.gather_slots].transpose(0, 2, 1, 3)
        gathered_v = v_pool[self._layout.gather_slots].transpose(0, 2, 1, 3)
        return gathered_k, gathered_v

    def make_mask(
        self, n: int, return_array: bool = False, window_size: int | None = None
    ) -> mx.array | str | None:
        if window_size is not None:
            raise NotImplementedError("sliding-window attention is not paged")
        return self._layout.mask

    @property
    def state(self) -> list[mx.array]:
        return self._storage.state()
