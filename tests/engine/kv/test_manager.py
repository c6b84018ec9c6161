"""KVCacheManager: prefix hits by type, sharing, copy-on-write, commit, free and limits."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from vllm_mlx.engine.kv.manager import (
    BlockCopy,
    BlockTable,
    HitType,
    KVCacheManager,
    NoFreeBlocks,
    PrefixMatch,
)

BS = 4
P = list(range(100, 110))  # a 10-token prompt: blocks [100..103] [104..107] [108 109 ..]
OUT = [900, 901, 902]  # generated after P; the last one's KV is never computed


@dataclass
class Run:
    """A sequence driven like the engine drives it: prefill tokens[:-1], then decodes."""

    table: BlockTable
    match: PrefixMatch
    tokens: list[int]
    copies: list[BlockCopy] = field(default_factory=list)


def run(kv: KVCacheManager, prompt: Sequence[int], outputs: Sequence[int] = ()) -> Run:
    table, match = kv.begin(prompt)
    r = Run(table, match, list(prompt))
    r.copies += kv.append_slots(table, len(prompt) - 1 - match.num_tokens)
    kv.commit(table, r.tokens[:-1], len(prompt))
    for token in outputs:  # each decode step computes the last token and samples one
        r.copies += kv.append_slots(table, 1)
        kv.commit(table, r.tokens, len(prompt))
        r.tokens.append(token)
    if not outputs:  # the prompt's last token still runs once, for its logits
        r.copies += kv.append_slots(table, 1)
        kv.commit(table, r.tokens, len(prompt))
    return r


def finished(kv: KVCacheManager, prompt: Sequence[int], outputs: Sequence[int] = ()) -> Run:
    r = run(kv, prompt, outputs)
    kv.free(r.table)
    return r


def kv_with_p(num_blocks: int = 16, **kwargs: object) -> tuple[KVCacheManager, list[int]]:
    """A cache that served P and generated OUT; returns the blocks it left behind."""
    kv = KVCacheManager(num_blocks, BS, **kwargs)  # type: ignore[arg-type]
    r = run(kv, P, OUT)
    blocks = list(r.table.block_ids)
    kv.free(r.table)
    return kv, blocks


# -- hit types ------------------------------------------------------------------


def test_begin_on_an_empty_cache_is_a_miss() -> None:
    kv = KVCacheManager(8, BS)
    table, match = kv.begin(P)
    assert match == PrefixMatch((), 0, HitType.MISS)
    assert (table.block_ids, table.num_tokens, table.borrowed_tail, table.hashes) == (
        [],
        0,
        False,
        [],
    )
    assert kv.pool.num_used == 0


def test_finished_sequence_registers_its_full_blocks() -> None:
    kv, blocks = kv_with_p()
    assert len(blocks) == 3  # 12 computed slots: P and the first two outputs
    assert kv.pool.num_cached == 3
    assert kv.pool.num_cached_free == 3
    assert kv.pool.num_used == 0
    assert kv.pool.blocks[blocks[2]].tokens == (108, 109, 900, 901)
    assert kv.pool.blocks[blocks[2]].prompt_tokens == 2


def test_same_prompt_again_is_exact_with_a_borrowed_tail() -> None:
    kv, blocks = kv_with_p()
    table, match = kv.begin(P)
    assert match.hit_type is HitType.EXACT
    assert match.num_tokens == len(P) - 1  # the last token always runs
    assert match.block_ids == tuple(blocks)
    assert match.borrowed_tail  # 9 tokens end inside the third block
    assert table.block_ids == blocks
    assert table.num_tokens == 9
    assert table.borrowed_tail
    assert table.hashes == [kv.pool.blocks[b].hash for b in blocks[:2]]
    assert all(kv.pool.blocks[b].ref_count == 1 for b in blocks)


def test_exact_hit_cut_at_a_block_boundary_borrows_nothing() -> None:
    kv = KVCacheManager(16, BS)
    prompt = P[:9]
    finished(kv, prompt, [900, 901, 902, 903, 904])  # third block: 108 900 901 902
    _, match = kv.begin(prompt)
    assert match.hit_type is HitType.EXACT
    assert match.num_tokens == 8
    assert not match.borrowed_tail
    assert len(match.block_ids) == 2


def test_exact_hit_of_a_block_aligned_prompt() -> None:
    kv = KVCacheManager(16, BS)
    prompt = P[:8]
    finished(kv, prompt, [900, 901, 902, 903, 904, 905])  # a third block of outputs only
    _, match = kv.begin(prompt)
    assert match.hit_type is HitType.EXACT
    assert match.num_tokens == 7
    assert match.borrowed_tail
    assert len(match.block_ids) == 2


def test_next_turn_extending_prompt_and_output_is_a_prefix_hit() -> None:
    kv, blocks = kv_with_p()
    turn2 = [*P, *OUT, 7, 7, 7, 7, 7]
    table, match = kv.begin(turn2)
    assert match.hit_type is HitType.PREFIX
    assert match.num_tokens == 12  # reuses the generated tokens too, not just the prompt
    assert match.num_tokens > len(P)
    assert match.block_ids == tuple(blocks)
    assert not match.borrowed_tail
    assert table.hashes == [kv.pool.blocks[b].hash for b in blocks]


def test_prefix_of_a_cached_prompt_is_a_supersequence_hit() -> None:
    kv, blocks = kv_with_p()
    _, match = kv.begin(P[:6])
    assert match.hit_type is HitType.SUPERSEQUENCE
    assert match.num_tokens == 5
    assert match.block_ids == tuple(blocks[:2])
    assert match.borrowed_tail


def test_block_aligned_prefix_of_a_cached_prompt_is_a_supersequence_hit() -> None:
    kv, blocks = kv_with_p()
    _, match = kv.begin(P[:8])
    assert match.hit_type is HitType.SUPERSEQUENCE  # the cached prompt went on
    assert match.num_tokens == 7
    assert match.block_ids == tuple(blocks[:2])


def test_diverging_prompt_inside_a_block_is_an_lcp_hit() -> None:
    kv, blocks = kv_with_p()
    _, match = kv.begin([*P[:6], 1, 2, 3, 4])
    assert match.hit_type is HitType.LCP
    assert match.num_tokens == 6
    assert match.block_ids == tuple(blocks[:2])
    assert match.borrowed_tail


def test_diverging_prompt_at_a_block_boundary_is_an_lcp_hit() -> None:
    kv, blocks = kv_with_p()
    _, match = kv.begin([*P[:4], 1, 2, 3, 4, 5])
    assert match.hit_type is HitType.LCP
    assert match.num_tokens == 4
    assert match.block_ids == (blocks[0],)
    assert not match.borrowed_tail


def test_unrelated_prompt_is_a_miss() -> None:
    kv, _ = kv_with_p()
    _, match = kv.begin([1, 2, 3, 4, 5, 6])
    assert match.hit_type is HitType.MISS
    assert match.num_tokens == 0


def test_one_token_prompt_is_a_miss_even_when_cached() -> None:
    kv, _ = kv_with_p()
    _, match = kv.begin(P[:1])
    assert match == PrefixMatch((), 0, HitType.MISS)


def test_exact_is_reported_when_a_longer_prompt_shares_the_tail_block() -> None:
    kv = KVCacheManager(32, BS)
    finished(kv, [*P, 1, 2, 3, 4], [5])  # a longer prompt: third block 108 109 1 2
    finished(kv, P, OUT)  # then P itself, whose third block is 108 109 900 901
    _, match = kv.begin(P)
    assert match.hit_type is HitType.EXACT


# -- sharing and copy-on-write ----------------------------------------------------


def test_matched_blocks_are_shared_not_copied() -> None:
    kv = KVCacheManager(16, BS)
    prompt = [*P, 1, 2, 3, 4, 5, 6]  # 16 tokens: 3 full blocks committed by prefill
    a = run(kv, prompt)
    used = kv.pool.num_used
    table, match = kv.begin([*prompt[:12], 7, 7, 7])
    assert match.block_ids == tuple(a.table.block_ids[:3])
    assert not match.borrowed_tail
    assert all(kv.pool.blocks[b].ref_count == 2 for b in match.block_ids)
    assert kv.pool.num_used == used  # nothing new until the suffix is appended
    assert kv.append_slots(table, 2) == []
    assert kv.pool.num_used == used + 1
    kv.free(table)
    assert all(kv.pool.blocks[b].ref_count == 1 for b in match.block_ids)


def test_first_write_to_a_borrowed_tail_copies_it() -> None:
    kv, blocks = kv_with_p()
    table, _ = kv.begin(P)
    src = blocks[2]
    copies = kv.append_slots(table, 1)
    assert len(copies) == 1
    copy = copies[0]
    assert (copy.src, copy.num_tokens) == (src, 1)  # only token 108 was matched in it
    assert copy.dst not in blocks
    assert table.block_ids == [*blocks[:2], copy.dst]
    assert not table.borrowed_tail
    assert table.num_tokens == 10
    assert kv.pool.blocks[copy.dst].ref_count == 1
    # The source is back to unreferenced, still cached and findable by others.
    assert kv.pool.blocks[src].ref_count == 0
    assert kv.pool.blocks[src].hash is not None
    assert kv.begin(P)[1].block_ids[2] == src
    assert kv.append_slots(table, 1) == []  # the table now owns its tail


def test_copy_on_write_leaves_the_other_holder_untouched() -> None:
    kv = KVCacheManager(16, BS)
    a = run(kv, P, OUT)  # still running
    src = a.table.block_ids[2]
    table, match = kv.begin(P)
    assert match.borrowed_tail
    assert kv.pool.blocks[src].ref_count == 2
    (copy,) = kv.append_slots(table, 1)
    assert copy.src == src
    assert kv.pool.blocks[src].ref_count == 1  # back to the owner alone
    assert a.table.block_ids[2] == src
    assert table.block_ids[2] == copy.dst != src


def test_blocks_needed_counts_the_copy_of_a_borrowed_tail() -> None:
    kv, _ = kv_with_p()
    table, _ = kv.begin(P)  # 9 tokens in 3 blocks, the last borrowed
    assert kv.blocks_needed(table, 0) == 0
    assert kv.blocks_needed(table, 1) == 1  # the copy
    assert kv.blocks_needed(table, 3) == 1  # still fits in the copied block
    assert kv.blocks_needed(table, 4) == 2  # copy + one new block
    assert kv.blocks_needed(table, 8) == 3
    empty = BlockTable()
    assert kv.blocks_needed(empty, 0) == 0
    assert kv.blocks_needed(empty, 1) == 1
    assert kv.blocks_needed(empty, 4) == 1
    assert kv.blocks_needed(empty, 5) == 2


def test_can_append_compares_needs_with_free_blocks() -> None:
    kv = KVCacheManager(4, BS)
    finished(kv, P, OUT)  # cached, not held
    table, _ = kv.begin(P)  # holds 3 blocks, 1 free
    assert kv.pool.num_free == 1
    assert kv.can_append(table, 3)  # copy only
    assert not kv.can_append(table, 4)  # copy + new block
    other = BlockTable()
    assert kv.can_append(other, 4)
    assert not kv.can_append(other, 5)


def test_append_that_does_not_fit_raises_and_changes_nothing() -> None:
    kv = KVCacheManager(3, BS)
    table, _ = kv.begin([1] * 9)
    kv.append_slots(table, 8)
    before = (list(table.block_ids), table.num_tokens, table.borrowed_tail, kv.pool.num_free)
    with pytest.raises(NoFreeBlocks):
        kv.append_slots(table, 9)  # would need 3 more blocks, 1 is free
    assert (list(table.block_ids), table.num_tokens, table.borrowed_tail, kv.pool.num_free) == (
        before
    )


def test_copy_that_does_not_fit_raises_and_keeps_the_borrowed_tail() -> None:
    kv = KVCacheManager(3, BS)
    finished(kv, P, OUT)
    table, _ = kv.begin(P)  # borrows all 3 blocks
    assert kv.pool.num_free == 0
    with pytest.raises(NoFreeBlocks):
        kv.append_slots(table, 1)
    assert table.borrowed_tail
    assert table.num_tokens == 9
    assert len(table.block_ids) == 3
    assert kv.pool.num_used == 3


def test_append_zero_slots_is_a_no_op() -> None:
    kv, _ = kv_with_p()
    table, _ = kv.begin(P)
    assert kv.append_slots(table, 0) == []
    assert table.borrowed_tail
    assert table.num_tokens == 9


def test_slots_maps_positions_through_the_block_table() -> None:
    kv = KVCacheManager(16, BS)
    table = BlockTable([4, 9, 2], num_tokens=10)
    assert kv.slots(table, 0, 3) == [16, 17, 18]
    assert kv.slots(table, 2, 5) == [18, 19, 36, 37, 38]
    assert kv.slots(table, 9, 1) == [9]
    assert kv.slots(table, 3, 0) == []


def test_append_slots_grows_the_table_block_by_block() -> None:
    kv = KVCacheManager(8, BS)
    table = BlockTable()
    kv.append_slots(table, 3)
    assert (len(table.block_ids), table.num_tokens) == (1, 3)
    kv.append_slots(table, 1)
    assert (len(table.block_ids), table.num_tokens) == (1, 4)
    kv.append_slots(table, 1)
    assert (len(table.block_ids), table.num_tokens) == (2, 5)
    kv.append_slots(table, 11)
    assert (len(table.block_ids), table.num_tokens) == (4, 16)
    assert len(set(table.block_ids)) == 4


# -- commit ---------------------------------------------------------------------


def test_commit_registers_only_full_blocks_with_their_prompt_share() -> None:
    kv = KVCacheManager(8, BS)
    tokens = list(range(1, 11))
    table, _ = kv.begin(tokens)
    kv.append_slots(table, 10)
    kv.commit(table, tokens, prompt_len=6)
    assert kv.pool.num_cached == 2  # the 2 tokens of the third block are not indexed
    b0, b1, b2 = (kv.pool.blocks[b] for b in table.block_ids)
    assert (b0.tokens, b0.prompt_tokens) == ((1, 2, 3, 4), 4)
    assert (b1.tokens, b1.prompt_tokens) == ((5, 6, 7, 8), 2)
    assert b2.hash is None
    assert table.hashes == [b0.hash, b1.hash]
    assert b1.parent_hash == b0.hash
    kv.commit(table, tokens, prompt_len=6)  # idempotent
    assert kv.pool.num_cached == 2
    tokens += [11, 12]
    kv.append_slots(table, 2)
    kv.commit(table, tokens, prompt_len=6)
    assert (b2.tokens, b2.prompt_tokens, b2.parent_hash) == ((9, 10, 11, 12), 0, b1.hash)
    assert len(table.hashes) == 3


def test_commit_of_a_twin_block_keeps_the_chain_going() -> None:
    kv = KVCacheManager(8, BS)
    prompt = list(range(1, 10))
    a, b = BlockTable(), BlockTable()
    for table in (a, b):  # two tables write the same tokens without sharing
        kv.append_slots(table, 9)
        kv.commit(table, prompt, len(prompt))
    assert kv.pool.num_cached == 2  # b's twins are not indexed
    assert b.hashes == a.hashes
    assert kv.begin(prompt)[1].block_ids[:2] == tuple(a.block_ids[:2])


# -- free and retention -----------------------------------------------------------


def test_free_clears_the_table_and_releases_every_block() -> None:
    kv = KVCacheManager(8, BS)
    r = run(kv, P, OUT)
    kv.free(r.table)
    assert (r.table.block_ids, r.table.hashes, r.table.num_tokens, r.table.borrowed_tail) == (
        [],
        [],
        0,
        False,
    )
    assert kv.pool.num_used == 0


def test_free_releases_tail_first_so_the_prefix_is_evicted_last() -> None:
    kv = KVCacheManager(3, BS)
    r = run(kv, P, OUT)  # all 3 blocks used and cached
    ids = list(r.table.block_ids)
    kv.free(r.table)
    assert kv.pool.allocate() == ids[2]  # the tail goes first
    _, match = kv.begin(P)
    assert match.block_ids == tuple(ids[:2])  # the prefix survived
    assert match.num_tokens == 8
    assert match.hit_type is HitType.PREFIX  # what is left is a prefix of P


def test_retain_last_only_keeps_just_the_last_freed_sequence() -> None:
    kv = KVCacheManager(32, BS, retain_last_only=True)
    finished(kv, P, OUT)
    other = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    finished(kv, other, [50, 51, 52, 53])
    assert kv.pool.num_cached == kv.pool.num_cached_free == 3  # other's blocks only
    assert kv.begin(P)[1].hit_type is HitType.MISS
    _, match = kv.begin(other)
    assert match.hit_type is HitType.EXACT


def test_retain_last_only_keeps_blocks_still_in_use() -> None:
    kv = KVCacheManager(32, BS, retain_last_only=True)
    a = run(kv, P, OUT)  # still running: its blocks are referenced
    finished(kv, [1, 2, 3, 4, 5, 6], [7])
    assert kv.begin(P[:6])[1].hit_type is HitType.SUPERSEQUENCE
    assert kv.pool.num_cached == 3 + 1
    kv.free(a.table)


def test_max_cached_free_caps_unreferenced_cached_blocks() -> None:
    kv = KVCacheManager(32, BS, max_cached_free=2)
    prompt = list(range(1, 18))  # 16 committed tokens: 4 full blocks
    r = run(kv, prompt, [99])
    ids = list(r.table.block_ids)
    assert kv.pool.num_cached == 4
    kv.free(r.table)
    assert kv.pool.num_cached_free == kv.pool.num_cached == 2
    _, match = kv.begin(prompt)
    assert match.block_ids == tuple(ids[:2])  # the prefix is kept, the tail evicted


def test_max_cached_free_ignores_blocks_in_use() -> None:
    kv = KVCacheManager(32, BS, max_cached_free=1)
    a = run(kv, list(range(1, 18)), [99])
    finished(kv, list(range(50, 67)), [99])
    assert kv.pool.num_cached_free == 1
    assert kv.pool.num_cached == 4 + 1  # a's four blocks are referenced, so kept
    kv.free(a.table)
    assert kv.pool.num_cached_free == 1


def test_max_cached_free_zero_keeps_nothing_after_free() -> None:
    kv = KVCacheManager(32, BS, max_cached_free=0)
    finished(kv, P, OUT)
    assert kv.pool.num_cached == 0
    assert kv.begin(P)[1].hit_type is HitType.MISS


# -- statistics -----------------------------------------------------------------


def test_hit_rate_is_the_share_of_prompt_tokens_served_from_cache() -> None:
    kv = KVCacheManager(32, BS)
    assert kv.hit_rate == 0.0
    finished(kv, P, OUT)  # 10 tokens, all computed
    assert kv.hit_rate == 0.0
    finished(kv, P, OUT)  # 9 of 10 cached
    assert kv.hit_rate == pytest.approx(9 / 20)
    assert (kv.queries, kv.query_tokens, kv.hit_tokens) == (2, 20, 9)


def test_a_recompute_after_preemption_is_not_a_new_query() -> None:
    kv = KVCacheManager(32, BS)
    first = run(kv, P, OUT)
    kv.free(first.table)  # preempted: its blocks stay cached
    table, match = kv.begin(first.tokens, recompute=True)
    assert match.num_tokens > len(P)  # it rejoins from its own blocks...
    assert (kv.queries, kv.query_tokens, kv.hit_tokens) == (1, len(P), 0)  # ...uncounted
    kv.free(table)


# -- shared system prompt -----------------------------------------------------------


def test_concurrent_requests_share_a_long_system_prompt() -> None:
    bs, system, suffix, n = 16, 1000, 200, 8
    kv = KVCacheManager(4096, bs)
    rng = random.Random(7)
    prefix = [rng.randrange(1, 30000) for _ in range(system)]
    prompts = [[*prefix, *(rng.randrange(1, 30000) for _ in range(suffix))] for _ in range(n)]
    first = run(kv, prompts[0])  # commits the prefix
    tables = [first.table]
    for prompt in prompts[1:]:
        r = run(kv, prompt)
        assert r.match.hit_type is HitType.LCP
        assert r.match.num_tokens == system
        assert r.match.block_ids[: system // bs] == tuple(first.table.block_ids[: system // bs])
        tables.append(r.table)
    prefix_blocks = math.ceil(system / bs)
    suffix_blocks = math.ceil(suffix / bs)
    assert kv.pool.num_used <= 1.1 * (prefix_blocks + n * suffix_blocks)
    assert kv.pool.num_used < 2 * prefix_blocks + n * suffix_blocks  # the prefix is held once
    assert kv.pool.blocks[first.table.block_ids[0]].ref_count == n
    for table in tables:
        kv.free(table)
    assert kv.pool.num_used == 0


# -- randomized: every sequence reads back its own tokens ---------------------------


class Storage:
    """Stands in for the KV arrays: one token id per slot."""

    def __init__(self, kv: KVCacheManager) -> None:
        self.kv = kv
        self.slots: list[int | None] = [None] * (kv.pool.num_blocks * kv.block_size)

    def copy(self, copies: Sequence[BlockCopy]) -> None:
        bs = self.kv.block_size
        for c in copies:
            for i in range(c.num_tokens):
                self.slots[c.dst * bs + i] = self.slots[c.src * bs + i]

    def write(self, table: BlockTable, start: int, tokens: Sequence[int]) -> None:
        for slot, token in zip(self.kv.slots(table, start, len(tokens)), tokens, strict=True):
            self.slots[slot] = token

    def read(self, table: BlockTable, count: int) -> list[int | None]:
        return [self.slots[s] for s in self.kv.slots(table, 0, count)]


def test_randomized_sequences_always_read_back_their_own_tokens() -> None:
    rng = random.Random(99)
    kv = KVCacheManager(40, BS, max_cached_free=20)
    store = Storage(kv)
    bases = [[rng.randrange(3) for _ in range(30)] for _ in range(3)]  # shared prefixes
    live: list[tuple[BlockTable, list[int], int]] = []  # table, tokens, prompt length
    hits: set[HitType] = set()
    copies = 0
    for _ in range(1500):
        if rng.random() < 0.15 or not live:
            cut = rng.randrange(2, 30)
            prompt = rng.choice(bases)[:cut] + [rng.randrange(3) for _ in range(rng.randrange(3))]
            table, match = kv.begin(prompt)
            hits.add(match.hit_type)
            assert store.read(table, match.num_tokens) == prompt[: match.num_tokens]
            try:
                done = kv.append_slots(table, len(prompt) - 1 - match.num_tokens)
            except NoFreeBlocks:
                kv.free(table)
                continue
            copies += len(done)
            store.copy(done)
            store.write(table, match.num_tokens, prompt[match.num_tokens : -1])
            kv.commit(table, prompt[:-1], len(prompt))
            live.append((table, prompt, len(prompt)))
        elif rng.random() < 0.2:
            table, _, _ = live.pop(rng.randrange(len(live)))
            kv.free(table)
            assert kv.pool.num_cached_free <= 20  # the cap holds after every free
        else:
            table, tokens, prompt_len = rng.choice(live)
            try:
                done = kv.append_slots(table, 1)
            except NoFreeBlocks:
                table, _, _ = live.pop(0)
                kv.free(table)
                continue
            copies += len(done)
            store.copy(done)
            store.write(table, len(tokens) - 1, tokens[-1:])
            assert table.num_tokens == len(tokens)
            assert store.read(table, len(tokens)) == tokens
            kv.commit(table, tokens, prompt_len)
            tokens.append(rng.randrange(3))
        refs = [0] * kv.pool.num_blocks
        for table, _, _ in live:
            for b in table.block_ids:
                refs[b] += 1
        assert refs == [blk.ref_count for blk in kv.pool.blocks]
    assert copies > 0
    assert {HitType.EXACT, HitType.SUPERSEQUENCE, HitType.LCP, HitType.MISS} <= hits
    for table, _, _ in live:
        kv.free(table)
    assert kv.pool.num_used == 0
