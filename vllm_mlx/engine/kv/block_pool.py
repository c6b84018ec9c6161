"""A fixed pool of KV blocks with reference counts and a hash index of full blocks.

Pure bookkeeping: block ids index slots in the MLX storage that backend/ owns.

    free queue (ref 0, LRU first)      cached index (full blocks)
    ┌───┬───┬───┬───┬───┐             hash(parent, tokens) ─► block id
    │ 7 │ 2 │ 9 │ 4 │ 0 │ ◄─ release  parent hash ─► {child block ids}
    └───┴───┴───┴───┴───┘
      ▲ allocate pops the oldest; if it was cached its hash is dropped (eviction)

A block with ref_count > 0 is in use by running sequences and never evicted.
A cached block with ref_count 0 stays findable until it is reallocated.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class NoFreeBlocks(RuntimeError):
    """The pool has no block to give; the scheduler must wait or preempt."""


def chain_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    """Hash of a full block, chained to everything before it."""
    return hash((parent, tokens))


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set while the block is in the cached index
    parent_hash: int | None = None  # hash of the block before it in its sequence
    tokens: tuple[int, ...] = ()  # contents, kept to verify hash hits and match inside
    prompt_tokens: int = 0  # how many of those tokens were prompt (for hit types)


class BlockPool:
    """Allocation, sharing and LRU eviction over ``num_blocks`` fixed-size blocks."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[int, int] = {}
        self.num_cached_free = 0  # cached blocks no sequence uses (the reusable cache)
        self.high_water = 0  # one past the largest block id ever handed out
        self._children: dict[int | None, set[int]] = {}

    # -- counts ---------------------------------------------------------------

    @property
    def num_free(self) -> int:
        """Blocks that can be allocated now (unused, cached or not)."""
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    # -- allocation -----------------------------------------------------------

    def allocate(self) -> int:
        """A fresh block with ref_count 1; evicts the least recently freed one."""
        if not self._free:
            raise NoFreeBlocks("KV block pool exhausted")
        block_id, _ = self._free.popitem(last=False)
        self._uncache(self.blocks[block_id])
        self.blocks[block_id].ref_count = 1
        self.high_water = max(self.high_water, block_id + 1)
        return block_id

    def acquire(self, block_id: int) -> None:
        """Share an existing block (a prefix hit or a fork)."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
            self.num_cached_free -= block.hash is not None
        block.ref_count += 1

    def release(self, block_id: int, keep_cached: bool = True) -> None:
        """Drop one reference; at zero the block becomes reclaimable (LRU tail)."""
        block = self.blocks[block_id]
        if block.ref_count <= 0:
            raise ValueError(f"block {block_id} released more often than acquired")
        if block.ref_count == 1 and not keep_cached:
            self._uncache(block)
        block.ref_count -= 1
        if block.ref_count == 0:
            self.num_cached_free += block.hash is not None
            self._free[block_id] = None

    # -- the cached index -----------------------------------------------------

    def register(
        self, block_id: int, parent: int | None, tokens: tuple[int, ...], prompt_tokens: int
    ) -> int:
        """Index a full block; a twin already indexed keeps its place."""
        block = self.blocks[block_id]
        h = chain_hash(parent, tokens)
        if block.hash is None and h not in self._cached:
            block.hash, block.parent_hash = h, parent
            block.tokens, block.prompt_tokens = tokens, prompt_tokens
            self._cached[h] = block_id
            self._children.setdefault(parent, set()).add(block_id)
        return h

    def lookup(self, parent: int | None, tokens: tuple[int, ...]) -> int | None:
        """The cached block holding exactly these tokens after this parent."""
        block_id = self._cached.get(chain_hash(parent, tokens))
        if block_id is None:
            return None
        block = self.blocks[block_id]
        if block.tokens != tokens or block.parent_hash != parent:
            return None  # a hash collision is a miss, never wrong KV
        return block_id

    def children(self, parent: int | None) -> list[Block]:
        """Cached blocks that follow ``parent`` (candidates for a partial match)."""
        return [self.blocks[i] for i in self._children.get(parent, ())]

    def evict_cached(self, limit: int) -> int:
        """Drop up to ``limit`` unreferenced cached blocks, oldest first."""
        evicted = 0
        for block_id in list(self._free):
            if evicted >= limit:
                break
            block = self.blocks[block_id]
            if block.hash is not None:
                self._uncache(block)
                evicted += 1
        return evicted

    def _uncache(self, block: Block) -> None:
        if block.hash is None:
            return
        if block.ref_count == 0:
            self.num_cached_free -= 1
        del self._cached[block.hash]
        siblings = self._children.get(block.parent_hash)
        if siblings is not None:
            siblings.discard(block.block_id)
            if not siblings:
                del self._children[block.parent_hash]
        block.hash = block.parent_hash = None
        block.tokens, block.prompt_tokens = (), 0
