"""BlockPool: refcounts, LRU reuse, the hash-chained cached index and its counters."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from vllm_mlx.engine.kv import block_pool as block_pool_module
from vllm_mlx.engine.kv.block_pool import BlockPool, NoFreeBlocks, chain_hash

BS = 4


def full_pool(num_blocks: int) -> tuple[BlockPool, list[int]]:
    pool = BlockPool(num_blocks, BS)
    return pool, [pool.allocate() for _ in range(num_blocks)]


# -- construction and refcounts -------------------------------------------------


@pytest.mark.parametrize(("num_blocks", "block_size"), [(0, 4), (4, 0), (-1, 4)])
def test_rejects_non_positive_sizes(num_blocks: int, block_size: int) -> None:
    with pytest.raises(ValueError):
        BlockPool(num_blocks, block_size)


def test_new_pool_is_all_free() -> None:
    pool = BlockPool(5, BS)
    assert (pool.num_free, pool.num_used, pool.num_cached, pool.num_cached_free) == (5, 0, 0, 0)
    assert pool.high_water == 0


def test_allocate_acquire_release_counts_references() -> None:
    pool = BlockPool(3, BS)
    b = pool.allocate()
    assert pool.blocks[b].ref_count == 1
    pool.acquire(b)
    assert pool.blocks[b].ref_count == 2
    assert pool.num_used == 1
    pool.release(b)
    assert pool.blocks[b].ref_count == 1
    assert pool.num_used == 1  # still referenced: not reclaimable
    pool.release(b)
    assert pool.blocks[b].ref_count == 0
    assert (pool.num_used, pool.num_free) == (0, 3)


def test_release_below_zero_raises() -> None:
    pool = BlockPool(2, BS)
    b = pool.allocate()
    pool.release(b)
    with pytest.raises(ValueError, match="released more often"):
        pool.release(b)
    assert pool.blocks[b].ref_count == 0
    assert pool.num_free == 2


def test_release_of_a_never_allocated_block_raises() -> None:
    pool = BlockPool(2, BS)
    with pytest.raises(ValueError):
        pool.release(1)
    assert pool.num_free == 2


def test_exhausted_pool_raises_no_free_blocks() -> None:
    pool, _ = full_pool(3)
    with pytest.raises(NoFreeBlocks):
        pool.allocate()
    assert (pool.num_free, pool.num_used) == (0, 3)


def test_no_free_blocks_is_a_runtime_error() -> None:
    assert issubclass(NoFreeBlocks, RuntimeError)


def test_acquire_of_a_free_cached_block_takes_it_out_of_the_free_queue() -> None:
    pool, (a, b) = full_pool(2)
    pool.register(a, None, (1, 2, 3, 4), 4)
    pool.release(a)
    pool.release(b)
    assert (pool.num_free, pool.num_cached_free) == (2, 1)
    pool.acquire(a)
    assert pool.blocks[a].ref_count == 1
    assert (pool.num_free, pool.num_cached_free, pool.num_cached) == (1, 0, 1)
    assert pool.allocate() == b  # a is in use: never handed out twice
    with pytest.raises(NoFreeBlocks):
        pool.allocate()


def test_high_water_is_one_past_the_largest_id_handed_out() -> None:
    pool = BlockPool(8, BS)
    assert [pool.allocate() for _ in range(3)] == [0, 1, 2]
    assert pool.high_water == 3
    for b in (0, 1, 2):
        pool.release(b)
    pool.allocate()  # a never-used block (3) comes before released ones
    assert pool.high_water == 4
    for _ in range(4):
        pool.allocate()
    assert pool.high_water == 8


# -- LRU order ------------------------------------------------------------------


def test_never_used_blocks_come_first_in_id_order() -> None:
    pool = BlockPool(4, BS)
    assert [pool.allocate() for _ in range(4)] == [0, 1, 2, 3]


def test_released_blocks_are_reused_oldest_first() -> None:
    pool, _ = full_pool(4)
    for b in (2, 0, 3, 1):
        pool.release(b)
    assert [pool.allocate() for _ in range(4)] == [2, 0, 3, 1]


def test_reacquired_block_loses_its_place_in_the_queue() -> None:
    pool, _ = full_pool(3)
    pool.register(0, None, (1, 1, 1, 1), 4)
    for b in (0, 1, 2):
        pool.release(b)
    pool.acquire(0)  # a prefix hit
    pool.release(0)  # ...then finished again: now the most recently freed
    assert [pool.allocate() for _ in range(3)] == [1, 2, 0]


def test_cached_blocks_are_evicted_only_when_allocation_needs_them() -> None:
    pool = BlockPool(6, BS)
    a, b, c = (pool.allocate() for _ in range(3))
    ha = pool.register(a, None, (1, 2, 3, 4), 4)
    pool.register(b, ha, (5, 6, 7, 8), 4)
    for block in (a, b, c):
        pool.release(block)
    assert (pool.num_cached, pool.num_cached_free) == (2, 2)
    # Three never-used blocks are handed out before anything cached is touched.
    assert [pool.allocate() for _ in range(3)] == [3, 4, 5]
    assert pool.lookup(None, (1, 2, 3, 4)) == a
    assert pool.lookup(ha, (5, 6, 7, 8)) == b
    # Then the oldest released block goes first: a is evicted, b stays findable.
    assert pool.allocate() == a
    assert pool.lookup(None, (1, 2, 3, 4)) is None
    assert pool.lookup(ha, (5, 6, 7, 8)) == b
    assert (pool.num_cached, pool.num_cached_free) == (1, 1)
    assert pool.blocks[a].hash is None and pool.blocks[a].tokens == ()
    assert pool.allocate() == b
    assert (pool.num_cached, pool.num_cached_free) == (0, 0)
    assert pool.allocate() == c


def test_referenced_cached_blocks_are_never_evicted() -> None:
    pool, (a, b) = full_pool(2)
    pool.register(a, None, (1, 2, 3, 4), 4)
    pool.release(b)
    assert pool.allocate() == b
    with pytest.raises(NoFreeBlocks):
        pool.allocate()
    assert pool.lookup(None, (1, 2, 3, 4)) == a
    assert pool.evict_cached(10) == 0
    assert pool.lookup(None, (1, 2, 3, 4)) == a


# -- the cached index -------------------------------------------------------------


def test_register_and_lookup_follow_the_hash_chain() -> None:
    pool, (a, b, c) = full_pool(3)
    ha = pool.register(a, None, (1, 2, 3, 4), 4)
    assert ha == chain_hash(None, (1, 2, 3, 4))
    hb = pool.register(b, ha, (5, 6, 7, 8), 2)
    assert hb == chain_hash(ha, (5, 6, 7, 8))
    assert pool.lookup(None, (1, 2, 3, 4)) == a
    assert pool.lookup(ha, (5, 6, 7, 8)) == b
    blk = pool.blocks[b]
    assert (blk.hash, blk.parent_hash, blk.tokens, blk.prompt_tokens) == (
        hb,
        ha,
        (5, 6, 7, 8),
        2,
    )
    assert pool.num_cached == 2
    assert pool.num_cached_free == 0  # both still referenced
    assert pool.blocks[c].hash is None


def test_same_tokens_under_a_different_parent_do_not_match() -> None:
    pool, (a, b, c) = full_pool(3)
    ha = pool.register(a, None, (1, 2, 3, 4), 4)
    pool.register(b, ha, (5, 6, 7, 8), 4)
    assert pool.lookup(None, (5, 6, 7, 8)) is None  # at the root instead of after a
    hc = pool.register(c, None, (9, 9, 9, 9), 4)
    assert pool.lookup(hc, (5, 6, 7, 8)) is None  # after another block
    assert pool.lookup(ha, (5, 6, 7, 9)) is None  # different tokens


def test_hash_collision_with_different_tokens_is_a_miss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(block_pool_module, "chain_hash", lambda parent, tokens: 42)
    pool, (a, b) = full_pool(2)
    assert pool.register(a, None, (1, 2, 3, 4), 4) == 42
    assert pool.lookup(None, (9, 9, 9, 9)) is None  # same hash, other tokens: never wrong KV
    assert pool.lookup(None, (1, 2, 3, 4)) == a
    pool.register(b, None, (9, 9, 9, 9), 4)  # the colliding block cannot be indexed
    assert pool.blocks[b].hash is None
    assert pool.num_cached == 1


def test_hash_collision_under_a_different_parent_is_a_miss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(block_pool_module, "chain_hash", lambda parent, tokens: 42)
    pool, (a,) = full_pool(1)
    pool.register(a, 7, (1, 2, 3, 4), 4)
    assert pool.lookup(8, (1, 2, 3, 4)) is None


def test_twin_registration_keeps_the_first() -> None:
    pool, (a, b) = full_pool(2)
    ha = pool.register(a, None, (1, 2, 3, 4), 4)
    hb = pool.register(b, None, (1, 2, 3, 4), 1)  # same contents written twice
    assert hb == ha  # the caller still gets the chain hash to continue from
    assert pool.lookup(None, (1, 2, 3, 4)) == a
    assert pool.blocks[b].hash is None
    assert pool.blocks[a].prompt_tokens == 4
    assert pool.num_cached == 1
    assert [blk.block_id for blk in pool.children(None)] == [a]
    pool.release(b)
    assert pool.num_cached_free == 0  # b was never indexed


def test_registering_an_indexed_block_again_changes_nothing() -> None:
    pool, (a,) = full_pool(1)
    ha = pool.register(a, None, (1, 2, 3, 4), 4)
    pool.register(a, None, (5, 6, 7, 8), 4)
    assert pool.blocks[a].hash == ha
    assert pool.lookup(None, (5, 6, 7, 8)) is None
    assert pool.num_cached == 1


def test_children_lists_the_cached_blocks_after_a_parent() -> None:
    pool, (a, b, c, d) = full_pool(4)
    ha = pool.register(a, None, (1, 2, 3, 4), 4)
    hb = pool.register(b, ha, (5, 6, 7, 8), 4)
    pool.register(c, ha, (5, 6, 0, 0), 4)
    pool.register(d, hb, (9, 9, 9, 9), 0)
    assert {blk.block_id for blk in pool.children(None)} == {a}
    assert {blk.block_id for blk in pool.children(ha)} == {b, c}
    assert {blk.block_id for blk in pool.children(hb)} == {d}
    assert pool.children(12345) == []
    # Evicting a child removes it from its parent's list.
    pool.release(c)
    assert pool.evict_cached(1) == 1
    assert {blk.block_id for blk in pool.children(ha)} == {b}


def test_evict_cached_drops_unreferenced_cached_blocks_oldest_first() -> None:
    pool, (a, b, c, d) = full_pool(4)
    ha = pool.register(a, None, (1, 2, 3, 4), 4)
    hb = pool.register(b, ha, (5, 6, 7, 8), 4)
    hc = pool.register(c, hb, (9, 10, 11, 12), 4)
    pool.release(d)  # uncached: not counted and not touched
    pool.release(c)
    pool.release(a)
    assert pool.num_cached_free == 2
    assert pool.evict_cached(1) == 1  # c was freed before a
    assert pool.lookup(hb, (9, 10, 11, 12)) is None
    assert pool.lookup(None, (1, 2, 3, 4)) == a
    assert pool.lookup(ha, (5, 6, 7, 8)) == b  # referenced: kept
    assert (pool.num_cached, pool.num_cached_free, pool.num_free) == (2, 1, 3)
    assert hc != ha
    assert pool.evict_cached(0) == 0
    assert pool.evict_cached(-3) == 0
    assert pool.evict_cached(5) == 1  # only a was left to evict
    assert (pool.num_cached, pool.num_cached_free, pool.num_free) == (1, 0, 3)
    # Evicted blocks keep their place in the free queue.
    assert [pool.allocate() for _ in range(3)] == [d, c, a]


def test_release_with_keep_cached_true_keeps_the_block_findable() -> None:
    pool, (a,) = full_pool(1)
    pool.register(a, None, (1, 2, 3, 4), 4)
    pool.release(a)
    assert pool.lookup(None, (1, 2, 3, 4)) == a
    assert (pool.num_cached, pool.num_cached_free) == (1, 1)


def test_release_without_keeping_cached_uncaches_and_keeps_counts() -> None:
    pool, (a, b) = full_pool(2)
    pool.register(a, None, (1, 2, 3, 4), 4)
    pool.release(a, keep_cached=False)
    assert pool.lookup(None, (1, 2, 3, 4)) is None
    assert (pool.num_cached, pool.num_free) == (0, 1)
    assert pool.num_cached_free == 0
    pool.release(b)
    assert pool.num_cached_free == 0


# -- randomized consistency -------------------------------------------------------


class PoolModel:
    """A plain reference model of the pool: LRU free order, refcounts and the index."""

    def __init__(self, num_blocks: int) -> None:
        self.refs = [0] * num_blocks
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.index: dict[int, int] = {}  # hash -> block id
        self.info: dict[int, tuple[int | None, tuple[int, ...], int]] = {}  # id -> entry
        self.high_water = 0

    def uncache(self, block_id: int) -> None:
        if block_id in self.info:
            parent, tokens, _ = self.info.pop(block_id)
            del self.index[chain_hash(parent, tokens)]

    def allocate(self) -> int | None:
        if not self.free:
            return None
        block_id, _ = self.free.popitem(last=False)
        self.uncache(block_id)
        self.refs[block_id] = 1
        self.high_water = max(self.high_water, block_id + 1)
        return block_id

    def acquire(self, block_id: int) -> None:
        if self.refs[block_id] == 0:
            del self.free[block_id]
        self.refs[block_id] += 1

    def release(self, block_id: int) -> None:
        self.refs[block_id] -= 1
        if self.refs[block_id] == 0:
            self.free[block_id] = None

    def register(
        self, block_id: int, parent: int | None, tokens: tuple[int, ...], prompt: int
    ) -> None:
        h = chain_hash(parent, tokens)
        if block_id not in self.info and h not in self.index:
            self.index[h] = block_id
            self.info[block_id] = (parent, tokens, prompt)

    def evict(self, limit: int) -> int:
        victims = [b for b in self.free if b in self.info][: max(0, limit)]
        for b in victims:
            self.uncache(b)
        return len(victims)


def check_invariants(pool: BlockPool, model: PoolModel, last_high_water: int) -> None:
    n = pool.num_blocks
    refs = [blk.ref_count for blk in pool.blocks]
    assert refs == model.refs
    assert min(refs) >= 0
    assert pool.num_free == len(model.free) == refs.count(0)
    assert pool.num_used == n - pool.num_free == sum(1 for r in refs if r > 0)
    hashed = [blk for blk in pool.blocks if blk.hash is not None]
    assert pool.num_cached == len(hashed) == len(model.index)
    assert pool.num_cached_free == sum(1 for blk in hashed if blk.ref_count == 0)
    assert 0 <= pool.num_cached_free <= min(pool.num_cached, pool.num_free)
    assert last_high_water <= pool.high_water == model.high_water <= n
    touched = [blk.block_id for blk in pool.blocks if blk.ref_count > 0 or blk.hash is not None]
    assert pool.high_water >= max(touched, default=-1) + 1
    for blk in pool.blocks:
        entry = model.info.get(blk.block_id)
        if entry is None:
            assert (blk.hash, blk.parent_hash, blk.tokens, blk.prompt_tokens) == (None, None, (), 0)
            continue
        parent, tokens, prompt = entry
        assert blk.hash == chain_hash(parent, tokens)
        assert (blk.parent_hash, blk.tokens, blk.prompt_tokens) == (parent, tokens, prompt)
        assert pool.lookup(parent, tokens) == blk.block_id
        assert blk.block_id in {c.block_id for c in pool.children(parent)}
    parents = {entry[0] for entry in model.info.values()}
    for parent in parents | {None}:
        expected = {b for b, entry in model.info.items() if entry[0] == parent}
        assert {c.block_id for c in pool.children(parent)} == expected


def test_randomized_operations_keep_the_counters_consistent() -> None:
    rng = random.Random(1234)
    num_blocks = 12
    pool, model = BlockPool(num_blocks, BS), PoolModel(num_blocks)
    hashes: list[int | None] = [None]  # parents to chain from: the root and seen hashes
    high_water = 0
    for _ in range(4000):
        op = rng.random()
        held = [b for b in range(num_blocks) if model.refs[b] > 0]
        if op < 0.30:
            got = model.allocate()
            if got is None:
                with pytest.raises(NoFreeBlocks):
                    pool.allocate()
            else:
                assert pool.allocate() == got
        elif op < 0.55 and held:
            b = rng.choice(held)
            pool.release(b)
            model.release(b)
        elif op < 0.65:
            # Share a held block, or revive a free cached one (a prefix hit).
            candidates = held + [b for b in model.info if model.refs[b] == 0]
            if candidates:
                b = rng.choice(candidates)
                pool.acquire(b)
                model.acquire(b)
        elif op < 0.85 and held:
            b = rng.choice(held)
            parent = rng.choice(hashes)
            tokens = tuple(rng.randrange(3) for _ in range(BS))  # few values: many twins
            prompt = rng.randrange(BS + 1)
            hashes.append(pool.register(b, parent, tokens, prompt))
            model.register(b, parent, tokens, prompt)
        elif op < 0.92:
            parent = rng.choice(hashes)
            tokens = tuple(rng.randrange(3) for _ in range(BS))
            expected = model.index.get(chain_hash(parent, tokens))
            assert pool.lookup(parent, tokens) == expected
        elif op < 0.97:
            limit = rng.randrange(-1, 4)
            assert pool.evict_cached(limit) == model.evict(limit)
        else:
            b = rng.randrange(num_blocks)
            if model.refs[b] == 0:
                with pytest.raises(ValueError):
                    pool.release(b)
        check_invariants(pool, model, high_water)
        high_water = pool.high_water
    assert pool.num_cached > 0  # the run exercised the index
