"""Decode slots: a dense K/V working copy of the running batch, one row per sequence.

The paged pool is the source of truth (prefix sharing, preemption, copy-on-write),
but reading a batch from it means gathering every row's whole context, per layer,
every step. Instead each decoding sequence owns one row of a dense
(rows, kv_heads, cols, head_dim) array per layer for as long as it decodes:

    join : its context is gathered from its blocks once, into a free row
    step : each row's new K/V lands at its own column (a scatter of B tokens), and
           attention reads a view of the first rows and columns, as mlx-lm's
           batched cache does
    leave: the row is freed for the next joiner; until then it is a masked hole

New tokens reach the pool in bulk, not every step: a row's tokens since its last
flush are written there before anything could read them (a row leaving, a row
joining, whose blocks may be shared; and, through the storage, any prefill,
block copy or pool-read decode). A leaving row is flushed before its slot is reused
and before its blocks can be written by their next owner.

                 col 0 ...                       width
    slot 0  [ seq A keys ........ | new ]
    slot 1  [ hole: attends to column 0 only  ]
    slot 2  [ seq C keys .... | new ]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import mlx.core as mx

_GROW_COLS = 256  # columns grow in steps of this many tokens
_GROW_ROWS = 4  # rows grow in steps of this many sequences


@dataclass(frozen=True)
class Join:
    """A sequence that takes a slot: its first ``length`` tokens come from its blocks."""

    slot: int
    block_table: tuple[int, ...]
    length: int


@dataclass(frozen=True)
class Flush:
    """Slot tokens that are not in the pool yet: row ``rows[i]``, column ``cols[i]``
    goes to pool slot ``dest[i]``."""

    rows: mx.array
    cols: mx.array
    dest: mx.array


@dataclass(frozen=True)
class SlotStep:
    """Where one decode step reads and writes in the slot arrays (batch = slot order)."""

    batch: int  # slots the step runs over: live rows and holes
    feed: mx.array | None  # (batch,) caller row feeding each slot; None: the same order
    back: mx.array | None  # (B,) slot of each caller row; None: the same order
    positions: tuple[int, ...]  # (batch,) position each slot writes (holes: 0)
    width: int  # columns attended: the largest position + 1
    mask: mx.array | None  # (batch, 1, 1, width) keys each slot sees; None for one row
    columns: mx.array  # (batch,) the positions as an array: where each slot writes
    joins: tuple[Join, ...] = field(default=())  # rows to fill from the pool first
    flush: Flush | None = None  # written to the pool before the joins read it


class DecodeSlots:
    """Slot bookkeeping and the per-layer dense arrays.

    ``max_tokens`` bounds rows x cols (memory); past it :meth:`plan` returns None and
    the caller reads the pool directly.
    """

    def __init__(self, num_layers: int, block_size: int, max_tokens: int) -> None:
        self.block_size = block_size
        self.max_tokens = max_tokens
        self._owner: list[Hashable | None] = []  # sequence key per slot
        self._length: list[int] = []  # tokens each slot holds
        self._flushed: list[int] = []  # of which the pool holds the first ones
        self._table: list[tuple[int, ...]] = []  # block table of each slot's sequence
        self._unflushed: list[tuple[int, int, int]] = []  # freed rows' (row, col, dest)
        self.keys: list[mx.array | None] = [None] * num_layers
        self.values: list[mx.array | None] = [None] * num_layers
        self._shape = (0, 0)  # (rows, cols) of the arrays

    @property
    def num_live(self) -> int:
        return sum(owner is not None for owner in self._owner)

    def release(self) -> None:
        """Forget every row and free the arrays (flush them first: see :meth:`pending`)."""
        self._owner, self._length, self._flushed, self._table = [], [], [], []
        self._unflushed = []
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)
        self._shape = (0, 0)

    def plan(
        self,
        row_keys: Sequence[Hashable],
        block_tables: Sequence[Sequence[int]],
        positions: Sequence[int],
    ) -> SlotStep | None:
        """Assign each caller row a slot; row i writes position ``positions[i]``.

        None when the rows do not fit the budget: every row is then freed, and its
        unflushed tokens wait in :meth:`pending`.
        """
        slot_of = self._keep(row_keys, positions)
        joins = []
        for i, key in enumerate(row_keys):
            if key not in slot_of:
                slot = self._free_slot()
                self._owner[slot] = key
                # Its context is in the pool (prefill wrote it); nothing to flush yet.
                self._length[slot] = self._flushed[slot] = positions[i]
                self._table[slot] = table = tuple(block_tables[i])
                slot_of[key] = slot
                joins.append(Join(slot, table, positions[i]))
        width = max(positions) + 1
        if len(self._owner) * width > self.max_tokens:
            for slot, owner in enumerate(self._owner):
                if owner is not None:
                    self._unflushed += self._take(slot)
                self._owner[slot] = None
            return None
        # A joining row reads blocks that a running row may still hold unflushed
        # (a whole-prompt prefix hit): then every row flushes first.
        unflushed, self._unflushed = self._unflushed, []
        if joins:
            unflushed += [e for slot in range(len(self._owner)) for e in self._take(slot)]
        while self._owner and self._owner[-1] is None:
            for column in (self._owner, self._length, self._flushed, self._table):
                column.pop()
        batch = len(self._owner)
        slot_pos = [0] * batch
        feed = [0] * batch
        back = []
        for i, key in enumerate(row_keys):
            slot = slot_of[key]
            slot_pos[slot], feed[slot] = positions[i], i
            self._length[slot] = positions[i] + 1
            self._table[slot] = tuple(block_tables[i])  # a freed table is emptied
            back.append(slot)
        return SlotStep(
            batch,
            None if feed == list(range(batch)) else mx.array(feed, dtype=mx.int32),
            None if back == list(range(batch)) else mx.array(back, dtype=mx.int32),
            tuple(slot_pos),
            width,
            _mask(slot_pos, width),
            mx.array(slot_pos, dtype=mx.int32),
            tuple(joins),
            _flush(unflushed),
        )

    def pending(self) -> Flush | None:
        """Every token the pool does not hold yet; the caller writes them now."""
        unflushed, self._unflushed = self._unflushed, []
        for slot, owner in enumerate(self._owner):
            if owner is not None:
                unflushed += self._take(slot)
        return _flush(unflushed)

    def _take(self, slot: int) -> list[tuple[int, int, int]]:
        """A slot's unflushed tokens as (row, column, pool slot); they count as flushed."""
        table, start, end = self._table[slot], self._flushed[slot], self._length[slot]
        self._flushed[slot] = end
        return [(slot, p, pool_slot(table, p, self.block_size)) for p in range(start, end)]

    def _keep(self, row_keys: Sequence[Hashable], positions: Sequence[int]) -> dict[Hashable, int]:
        """Slots whose sequence goes on where it left off; the others are freed."""
        wanted = dict(zip(row_keys, positions, strict=True))
        kept = {}
        for slot, owner in enumerate(self._owner):
            if owner is not None and wanted.get(owner) == self._length[slot]:
                kept[owner] = slot
            elif owner is not None:
                self._unflushed += self._take(slot)
                self._owner[slot] = None
        return kept

    def _free_slot(self) -> int:
        for slot, owner in enumerate(self._owner):
            if owner is None:
                return slot
        self._owner.append(None)
        self._length.append(0)
        self._flushed.append(0)
        self._table.append(())
        return len(self._owner) - 1

    def arrays(self, layer: int, like: mx.array, rows: int, cols: int) -> tuple[mx.array, mx.array]:
        """Layer ``layer``'s K and V arrays with room for ``rows`` x ``cols``."""
        have_rows, have_cols = self._shape
        if rows > have_rows or cols > have_cols:
            self._shape = (
                max(have_rows, -(-rows // _GROW_ROWS) * _GROW_ROWS),
                max(have_cols, -(-cols // _GROW_COLS) * _GROW_COLS),
            )
            for arrays in (self.keys, self.values):
                for i, old in enumerate(arrays):
                    if old is not None:
                        arrays[i] = _grown(old, *self._shape)
        k, v = self.keys[layer], self.values[layer]
        if k is None or v is None:
            shape = (self._shape[0], like.shape[1], self._shape[1], like.shape[3])
            k = self.keys[layer] = mx.zeros(shape, dtype=like.dtype)
            v = self.values[layer] = mx.zeros(shape, dtype=like.dtype)
        return k, v

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.keys, *self.values) if a is not None)


def _grown(old: mx.array, rows: int, cols: int) -> mx.array:
    out = mx.zeros((rows, old.shape[1], cols, old.shape[3]), dtype=old.dtype)
    out[: old.shape[0], :, : old.shape[2]] = old
    return out


def pool_slot(table: Sequence[int], position: int, block_size: int) -> int:
    """The pool slot that holds ``position`` of a sequence with block table ``table``."""
    return table[position // block_size] * block_size + position % block_size


def _flush(entries: list[tuple[int, int, int]]) -> Flush | None:
    if not entries:
        return None
    rows, cols, dest = zip(*entries, strict=True)
    return Flush(*(mx.array(column, dtype=mx.int32) for column in (rows, cols, dest)))


def _mask(positions: Sequence[int], width: int) -> mx.array | None:
    if len(positions) == 1:
        return None  # one row attends to exactly its own columns
    cols = mx.arange(width, dtype=mx.int32)
    pos = mx.array(list(positions), dtype=mx.int32)
    return (cols[None, :] <= pos[:, None])[:, None, None, :]
