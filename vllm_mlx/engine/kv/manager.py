"""Block tables, prefix matching and copy-on-write over a :class:`BlockPool`.

One sequence's KV lives in the blocks of its table, in order:

    tokens     t0 … t15 | t16 … t31 | t32 … t37 ░░░░░░░░
    table      [   4    |    9      |    2      ]        block_size = 16
    hashes     h4 = H(None, t0…15) ─► h9 = H(h4, t16…31)  (full blocks only)

A new prompt walks the hash chain block by block; every hit is shared by
reference count, never copied. Where the prompt then matches only the first
tokens of a cached block, the sequence borrows that block read-only; its first
write there copies it to a private block (copy-on-write, :class:`BlockCopy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from vllm_mlx.engine.kv.block_pool import Block, BlockPool, NoFreeBlocks


class HitType(StrEnum):
    """How a prompt met the cache (GET /v1/status ``cache_hit_type``)."""

    EXACT = "exact"  # the whole prompt is cached, and a cached prompt ended right there
    SUPERSEQUENCE = "supersequence"  # the whole prompt is cached inside a longer sequence
    PREFIX = "prefix"  # a cached sequence is a prefix of the prompt (e.g. the last turn)
    LCP = "lcp"  # prompt and cache share a prefix, then diverge
    MISS = "miss"


@dataclass(frozen=True)
class PrefixMatch:
    block_ids: tuple[int, ...]  # cached blocks to share, in order
    num_tokens: int  # prompt tokens they cover (always < len(prompt))
    hit_type: HitType
    borrowed_tail: bool = False  # the last block is matched only in part: copy on write


@dataclass(frozen=True)
class BlockCopy:
    """Copy the first ``num_tokens`` slots of block ``src`` into block ``dst``."""

    src: int
    dst: int
    num_tokens: int


@dataclass
class BlockTable:
    """The blocks of one sequence and how many of their slots hold tokens."""

    block_ids: list[int] = field(default_factory=list)
    num_tokens: int = 0  # slots assigned (written or about to be written this step)
    borrowed_tail: bool = False  # last block is shared read-only until first write
    hashes: list[int] = field(default_factory=list)  # chain hashes of the leading full blocks


class KVCacheManager:
    """Allocates sequence blocks, shares cached prefixes and indexes full blocks."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        retain_last_only: bool = False,
        max_cached_free: int | None = None,
    ) -> None:
        self.pool = BlockPool(num_blocks, block_size)
        self.block_size = block_size
        self.retain_last_only = retain_last_only  # keep only the last finished sequence
        self.max_cached_free = max_cached_free  # cap on unreferenced cached blocks
        self.queries = 0
        self.query_tokens = 0
        self.hit_tokens = 0

    # -- prefix lookup --------------------------------------------------------

    def match_prefix(self, tokens: Sequence[int]) -> PrefixMatch:
        """The longest cached prefix of ``tokens``, leaving at least one to compute."""
        bs, pool = self.block_size, self.pool
        limit = len(tokens) - 1  # the last prompt token always runs, for its logits
        parent: int | None = None
        blocks: list[int] = []
        while (len(blocks) + 1) * bs <= len(tokens):
            chunk = tuple(tokens[len(blocks) * bs : (len(blocks) + 1) * bs])
            block_id = pool.lookup(parent, chunk)
            if block_id is None:
                break
            blocks.append(block_id)
            parent = pool.blocks[block_id].hash
        matched = len(blocks) * bs
        rest = tuple(tokens[matched : matched + bs])
        best, best_len = None, 0
        for child in pool.children(parent) if rest else ():
            n = common_prefix(child.tokens, rest)
            # On a tie, prefer the block where a cached prompt ended (an exact hit).
            if n > best_len or (n == best_len and n and child.prompt_tokens == n):
                best, best_len = child, n
        hit = self._hit_type(tokens, blocks, matched, best, best_len)
        if best is not None and best_len:
            blocks.append(best.block_id)
            matched += best_len
        if matched > limit:  # all cached: the last token still runs, for its logits
            matched = limit
            del blocks[_ceil_div(matched, bs) :]
        if matched == 0:
            return PrefixMatch((), 0, HitType.MISS)
        return PrefixMatch(tuple(blocks), matched, hit, borrowed_tail=matched % bs != 0)

    def _hit_type(
        self,
        tokens: Sequence[int],
        blocks: list[int],
        matched: int,
        partial: Block | None,
        partial_len: int,
    ) -> HitType:
        """Classify before capping, from the prompt lengths recorded in cached blocks."""
        total = matched + partial_len
        if total == 0:
            return HitType.MISS
        pool = self.pool
        if total == len(tokens):
            last = partial if partial is not None and partial_len else pool.blocks[blocks[-1]]
            in_block = (total - 1) % self.block_size + 1
            continued = in_block == self.block_size and any(
                c.prompt_tokens > 0 for c in pool.children(last.hash)
            )
            ended_here = last.prompt_tokens == in_block and not continued
            return HitType.EXACT if ended_here else HitType.SUPERSEQUENCE
        parent = pool.blocks[blocks[-1]].hash if blocks else None
        if partial_len or pool.children(parent):
            return HitType.LCP  # the cache goes on, with other tokens
        return HitType.PREFIX

    # -- sequence lifecycle ---------------------------------------------------

    def begin(
        self, tokens: Sequence[int], recompute: bool = False
    ) -> tuple[BlockTable, PrefixMatch]:
        """A table that starts with the cached prefix of ``tokens`` (shared).

        A preempted sequence's ``recompute`` is no new query: the hit statistics
        count each prompt once, at its first admission.
        """
        match = self.match_prefix(tokens)
        if not recompute:
            self.queries += 1
            self.query_tokens += len(tokens)
            self.hit_tokens += match.num_tokens
        for block_id in match.block_ids:
            self.pool.acquire(block_id)
        full = match.num_tokens // self.block_size
        hashes = [h for b in match.block_ids[:full] if (h := self.pool.blocks[b].hash) is not None]
        table = BlockTable(list(match.block_ids), match.num_tokens, match.borrowed_tail, hashes)
        return table, match

    def blocks_needed(self, table: BlockTable, num_tokens: int) -> int:
        """New blocks that ``num_tokens`` more slots would take (CoW included)."""
        needed = _ceil_div(table.num_tokens + num_tokens, self.block_size) - len(table.block_ids)
        cow = 1 if table.borrowed_tail and num_tokens > 0 else 0
        return max(0, needed) + cow

    def can_append(self, table: BlockTable, num_tokens: int) -> bool:
        return self.blocks_needed(table, num_tokens) <= self.pool.num_free

    def append_slots(self, table: BlockTable, num_tokens: int) -> list[BlockCopy]:
        """Assign slots for ``num_tokens`` new tokens; returns copies to do first.

        Raises NoFreeBlocks (and changes nothing) when the pool cannot cover it.
        """
        if not self.can_append(table, num_tokens):
            raise NoFreeBlocks(f"need {self.blocks_needed(table, num_tokens)} blocks")
        copies: list[BlockCopy] = []
        if table.borrowed_tail and num_tokens > 0:
            src = table.block_ids[-1]
            dst = self.pool.allocate()
            copies.append(BlockCopy(src, dst, table.num_tokens % self.block_size))
            self.pool.release(src)
            table.block_ids[-1] = dst
            table.borrowed_tail = False
        table.num_tokens += num_tokens
        while len(table.block_ids) * self.block_size < table.num_tokens:
            table.block_ids.append(self.pool.allocate())
        return copies

    def slots(self, table: BlockTable, start: int, count: int) -> list[int]:
        """Storage slot of each token position in [start, start + count)."""
        bs = self.block_size
        return [table.block_ids[p // bs] * bs + p % bs for p in range(start, start + count)]

    def commit(self, table: BlockTable, tokens: Sequence[int], prompt_len: int) -> None:
        """Index the table's newly full blocks so other sequences can share them.

        ``tokens`` are the sequence's tokens whose KV has been queued for writing.
        """
        bs = self.block_size
        while (len(table.hashes) + 1) * bs <= len(tokens):
            i = len(table.hashes)
            chunk = tuple(tokens[i * bs : (i + 1) * bs])
            parent = table.hashes[-1] if table.hashes else None
            prompt_part = max(0, min(bs, prompt_len - i * bs))
            table.hashes.append(self.pool.register(table.block_ids[i], parent, chunk, prompt_part))

    def free(self, table: BlockTable) -> None:
        """Release a sequence's blocks, tail first so prefixes are evicted last."""
        if self.retain_last_only:
            self.pool.evict_cached(self.pool.num_blocks)
        for block_id in reversed(table.block_ids):
            self.pool.release(block_id)
        if self.max_cached_free is not None:
            self.pool.evict_cached(self.pool.num_cached_free - self.max_cached_free)
        table.block_ids.clear()
        table.hashes.clear()
        table.num_tokens = 0
        table.borrowed_tail = False

    @property
    def hit_rate(self) -> float:
        """Share of prompt tokens served from the cache."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


__all__ = [
    "BlockCopy",
    "BlockTable",
    "HitType",
    "KVCacheManager",
    "NoFreeBlocks",
    "PrefixMatch",
]
