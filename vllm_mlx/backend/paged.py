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
    tables: mx.array  # (B, W) block ids of every row, padded with block 0
    kv_len: int | None  # keys to keep after the gather, for a single row
    mask: mx.array | str | None  # (B, 1, L, W*block) per-row causal mask; simpler when B == 1


def build_layout(
    block_tables: Sequence[Sequence[int]],
    positions: Sequence[int],
    new_tokens: int,
    block_size: int,
) -> BatchLayout:
    """Row b writes positions [positions[b], positions[b] + new_tokens) and reads all before."""
    width = max(len(t) for t in block_tables)
    tables = mx.array([list(t) + [0] * (width - len(t)) for t in block_tables], dtype=mx.int32)
    offsets = mx.array(list(positions), dtype=mx.int32)
    query_pos = offsets[:, None] + mx.arange(new_tokens, dtype=mx.int32)[None, :]
    row_blocks = mx.take_along_axis(tables, query_pos // block_size, axis=1)
    write_slots = (row_blocks * block_size + query_pos % block_size).reshape(-1)
    mask: mx.array | str | None
    kv_len = None
    if len(block_tables) == 1:
        # One row reads exactly its own positions: plain (bottom-right) causal attention.
        kv_len = positions[0] + new_tokens
        mask = "causal" if new_tokens > 1 else None
    else:
        # Whole blocks are gathered; the mask hides what lies past each row's position.
        key_pos = mx.arange(width * block_size, dtype=mx.int32)
        mask = (key_pos[None, None, :] <= query_pos[:, :, None])[:, None, :, :]
    return BatchLayout(offsets, write_slots, tables, kv_len, mask)


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
        return self._gather(k_pool), self._gather(v_pool)

    def _gather(self, pool: mx.array) -> mx.array:
        """Each row's K or V, block by block: (B, heads, W * block_size, head_dim)."""
        layout, bs = self._layout, self._storage.block_size
        b, width = layout.tables.shape
        # Whole blocks are copied per index, much faster than gathering slot by slot.
        blocks = pool.reshape(-1, bs, *pool.shape[1:])[layout.tables]
        rows = blocks.reshape(b, width * bs, *pool.shape[1:])
        if layout.kv_len is not None:
            rows = rows[:, : layout.kv_len]
        # Fused attention on CPU is ~2x slower on strided keys than a copy plus a contiguous run.
        return mx.contiguous(rows.transpose(0, 2, 1, 3))

    def make_mask(
        self, n: int, return_array: bool = False, window_size: int | None = None
    ) -> mx.array | str | None:
        if window_size is not None:
            raise NotImplementedError("sliding-window attention is not paged")
        return self._layout.mask

    @property
    def state(self) -> list[mx.array]:
        return self._storage.state()
