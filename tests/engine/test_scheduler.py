"""Scheduler: admission, decode rows, chunked prefill, prefix sharing and preemption.

A fake engine drives the plans the way ``vllm_mlx.engine.core`` does, and keeps one
token id per KV slot so that every forward can check it reads back its own tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from vllm_mlx.engine.kv.manager import BlockTable, HitType, KVCacheManager, PrefixMatch
from vllm_mlx.engine.scheduler import (
    IDLE_STEP_S,
    MAX_HOLD_STEPS,
    MIN_CHUNK,
    STARVE_STEPS,
    Phase,
    PrefillChunk,
    Scheduler,
    StepPlan,
)
from vllm_mlx.engine.step_cost import ChunkShape, StepCostModel

BS = 16


class FakeSeq:
    """The fields the scheduler reads and writes, plus a deterministic 'model'."""

    def __init__(self, request_id: str, prompt: Sequence[int], max_new: int) -> None:
        self.request_id = request_id
        self.phase = Phase.QUEUED
        self.table: BlockTable | None = None
        self.match: PrefixMatch | None = None
        self.num_computed = 0
        self.prompt = list(prompt)
        self.tokens = list(prompt)
        self.max_new = max_new

    @property
    def cache_keys(self) -> list[int]:  # no images: the prefix cache sees the tokens
        return self.tokens

    @property
    def output(self) -> list[int]:
        return self.tokens[len(self.prompt) :]

    def next_token(self) -> int:
        return 1000 + (len(self.tokens) * 31 + sum(map(ord, self.request_id))) % 500

    def expected_output(self) -> list[int]:
        ref = FakeSeq(self.request_id, self.prompt, self.max_new)
        while len(ref.output) < ref.max_new:
            ref.tokens.append(ref.next_token())
        return ref.output


class FakeEngine:
    """Applies plans like EngineCore._execute, over a token-per-slot fake KV store."""

    def __init__(
        self,
        num_blocks: int,
        max_running: int = 4,
        token_budget: int = 512,
        burst_factor: int = 4,
        cost: StepCostModel | None = None,
        max_step_s: float | None = None,
    ) -> None:
        self.kv = KVCacheManager(num_blocks, BS)
        self.sched: Scheduler[FakeSeq] = Scheduler(
            self.kv, max_running, token_budget, burst_factor, cost, max_step_s
        )
        self.store: list[int | None] = [None] * (num_blocks * BS)
        self.done: list[FakeSeq] = []
        self.overflowed: list[FakeSeq] = []
        self.plans: list[StepPlan[FakeSeq]] = []

    def add(self, request_id: str, prompt: Sequence[int], max_new: int = 4) -> FakeSeq:
        seq = FakeSeq(request_id, prompt, max_new)
        self.sched.add(seq)
        return seq

    def step(self) -> StepPlan[FakeSeq]:
        plan = self.sched.schedule()
        self.plans.append(plan)
        self.overflowed += plan.overflowed
        for c in plan.copies:
            for i in range(c.num_tokens):
                self.store[c.dst * BS + i] = self.store[c.src * BS + i]
        for chunk in plan.prefills:
            self._prefill(chunk)
        self._decode(plan.decodes)
        self.check()
        return plan

    def _prefill(self, chunk: PrefillChunk[FakeSeq]) -> None:
        seq, end = chunk.seq, chunk.start + chunk.length
        assert seq.table is not None
        assert chunk.start == seq.num_computed
        self._write(seq.table, chunk.start, seq.tokens[chunk.start : end])
        assert self._read(seq.table, end) == seq.tokens[:end]
        seq.num_computed = end
        self.kv.commit(seq.table, seq.tokens[:end], len(seq.prompt))

    def _decode(self, rows: list[FakeSeq]) -> None:
        for seq in rows:  # one batched forward: all rows write, then all read
            assert seq.table is not None
            assert seq.num_computed == len(seq.tokens) - 1
            self._write(seq.table, len(seq.tokens) - 1, seq.tokens[-1:])
        for seq in rows:
            assert seq.table is not None
            assert self._read(seq.table, len(seq.tokens)) == seq.tokens
            seq.num_computed = len(seq.tokens)
            self.kv.commit(seq.table, seq.tokens, len(seq.prompt))
            seq.tokens.append(seq.next_token())
            assert seq.num_computed == len(seq.tokens) - 1
            if len(seq.output) >= seq.max_new:
                assert self.sched.remove(seq.request_id) is seq
                self.done.append(seq)

    def _write(self, table: BlockTable, start: int, tokens: Sequence[int]) -> None:
        for slot, token in zip(self.kv.slots(table, start, len(tokens)), tokens, strict=True):
            self.store[slot] = token

    def _read(self, table: BlockTable, count: int) -> list[int | None]:
        return [self.store[s] for s in self.kv.slots(table, 0, count)]

    def check(self) -> None:
        """Every reference to a block comes from exactly one running table."""
        refs = [0] * self.kv.pool.num_blocks
        for seq in self.sched.running:
            if seq.table is not None:
                assert len(set(seq.table.block_ids)) == len(seq.table.block_ids)
                for b in seq.table.block_ids:
                    refs[b] += 1
        for seq in self.sched.waiting:
            assert seq.table is None
            assert seq.phase is Phase.QUEUED
        assert refs == [blk.ref_count for blk in self.kv.pool.blocks]
        assert len(self.sched.running) <= self.sched.max_running

    def run(self, max_steps: int = 10_000) -> int:
        steps = 0
        while self.sched.has_work:
            self.step()
            steps += 1
            assert steps <= max_steps, "the scheduler made no progress"
        return steps


def prompt(n: int, start: int = 1) -> list[int]:
    return list(range(start, start + n))


# -- construction and queues ------------------------------------------------------


@pytest.mark.parametrize(("max_running", "budget"), [(0, 512), (1, 0)])
def test_rejects_non_positive_limits(max_running: int, budget: int) -> None:
    with pytest.raises(ValueError):
        Scheduler(KVCacheManager(8, BS), max_running, budget)


def test_idle_scheduler_plans_nothing() -> None:
    eng = FakeEngine(8)
    assert not eng.sched.has_work
    plan = eng.sched.schedule()
    assert plan.empty
    assert (plan.copies, plan.preempted, plan.overflowed) == ([], [], [])


def test_admission_is_fifo_up_to_max_running() -> None:
    eng = FakeEngine(64, max_running=2)
    seqs = [eng.add(f"r{i}", prompt(5, 100 * i), max_new=3) for i in range(5)]
    assert all(s.phase is Phase.QUEUED for s in seqs)
    eng.step()
    assert eng.sched.running == seqs[:2]
    assert list(eng.sched.waiting) == seqs[2:]
    eng.run()
    assert [s.request_id for s in eng.done] == [s.request_id for s in seqs]
    assert max(len(p.decodes) for p in eng.plans) == 2
    assert eng.kv.pool.num_used == 0


def test_all_lists_running_then_waiting() -> None:
    eng = FakeEngine(64, max_running=1)
    a, b = eng.add("a", prompt(5)), eng.add("b", prompt(5, 50))
    eng.step()
    assert list(eng.sched.all()) == [a, b]


# -- decode and prefill -------------------------------------------------------------


def test_finishing_prefill_joins_the_decode_list_in_the_same_step() -> None:
    eng = FakeEngine(16)
    seq = eng.add("a", prompt(10), max_new=3)
    plan = eng.step()
    assert [(c.seq, c.start, c.length) for c in plan.prefills] == [(seq, 0, 9)]
    assert plan.decodes == [seq]
    assert seq.phase is Phase.GENERATION
    assert len(seq.output) == 1  # first token sampled in the step that prefilled
    assert eng.run() == 2


def test_each_decode_row_gets_exactly_one_slot() -> None:
    eng = FakeEngine(64, max_running=3)
    seqs = [eng.add(f"r{i}", prompt(7 + i, 100 * i), max_new=40) for i in range(3)]
    eng.step()
    for _ in range(20):
        before = {s.request_id: s.table.num_tokens for s in seqs if s.table is not None}
        plan = eng.step()
        assert plan.decodes == seqs and not plan.prefills
        for s in seqs:
            assert s.table is not None
            assert s.table.num_tokens == before[s.request_id] + 1
            assert s.table.num_tokens == len(s.tokens) - 1 == s.num_computed


def test_chunked_prefill_respects_the_budget_and_keeps_decoding() -> None:
    eng = FakeEngine(256, max_running=2, token_budget=512)
    short = eng.add("short", prompt(8), max_new=100)
    eng.step()
    assert short.phase is Phase.GENERATION
    long = eng.add("long", prompt(2000, 5000), max_new=2)
    steps = 0
    while long.phase is not Phase.GENERATION:
        plan = eng.step()
        steps += 1
        assert short in plan.decodes  # the stream never stalls
        prefill_tokens = sum(c.length for c in plan.prefills)
        assert prefill_tokens <= 512 - 1  # the decode row takes part of the budget
        assert [c.seq for c in plan.prefills] == [long]
    assert steps >= 4
    assert long.num_computed == len(long.tokens) - 1 == 2000  # and its first token is out
    assert eng.run() > 0
    assert long.output == long.expected_output()
    assert eng.kv.pool.num_used == 0


def test_prefill_chunks_are_contiguous() -> None:
    eng = FakeEngine(64, token_budget=100)
    seq = eng.add("a", prompt(350), max_new=1)
    eng.run()
    chunks = [(c.start, c.length) for p in eng.plans for c in p.prefills]
    assert chunks == [(0, 100), (100, 100), (200, 100), (300, 49)]
    assert seq.output == seq.expected_output()


def test_budget_is_shared_between_prefills_in_one_step() -> None:
    eng = FakeEngine(64, max_running=3, token_budget=64, burst_factor=1)
    for i in range(3):
        eng.add(f"r{i}", prompt(30, 100 * i), max_new=1)
    plan = eng.step()
    assert [c.length for c in plan.prefills] == [29, 29, 6]
    assert eng.run() > 0
    assert eng.kv.pool.num_used == 0


def test_a_burst_prefills_together_then_decodes_as_one_batch() -> None:
    eng = FakeEngine(256, max_running=8, token_budget=64)  # 256 tokens a step, no streams
    seqs = [eng.add(f"r{i}", prompt(40, 100 * i), max_new=3) for i in range(8)]
    first = eng.step()
    assert [c.length for c in first.prefills] == [39] * 6 + [22]  # chunks stay <= 64
    assert first.decodes == []  # the done prompts wait for the rest of their burst
    assert {s.phase for s in seqs[:6]} == {Phase.READY}
    second = eng.step()
    assert len(second.decodes) == 8  # the whole burst starts decoding together
    eng.run()
    assert all(s.output == s.expected_output() for s in seqs)


def test_a_ready_prompt_waits_only_for_a_burst_that_ends_next_step() -> None:
    eng = FakeEngine(512, max_running=2, token_budget=32, burst_factor=2)  # 64 a step
    short = eng.add("short", prompt(10, 1), max_new=2)
    eng.add("long", prompt(400, 500), max_new=2)  # far more than one step's budget
    eng.step()
    assert short.output  # no waiting for a burst that takes many steps
    eng.run()
    eng = FakeEngine(512, max_running=2, token_budget=32, burst_factor=2)
    short = eng.add("short", prompt(10, 1), max_new=2)
    eng.add("medium", prompt(60, 500), max_new=2)  # 32 now, the other 27 next step
    first = eng.step()
    assert short.phase is Phase.READY and short not in first.decodes
    second = eng.step()
    assert short in second.decodes and len(second.decodes) == 2
    eng.run()


def test_ready_prompts_wait_at_most_max_hold_steps() -> None:
    eng = FakeEngine(1024, max_running=16, token_budget=32, burst_factor=2)
    short = eng.add("short", prompt(10, 1), max_new=2)
    waits = 0
    for i in range(MAX_HOLD_STEPS + 1):
        eng.add(f"late{i}", prompt(60, 100 * (i + 1)), max_new=2)  # the burst goes on
        plan = eng.step()
        waits += short.phase is Phase.READY and short not in plan.decodes
    assert waits == MAX_HOLD_STEPS
    assert short.phase is Phase.GENERATION
    eng.run()


def test_streams_keep_the_small_budget() -> None:
    eng = FakeEngine(256, max_running=4, token_budget=64)
    streams = [eng.add(f"a{i}", prompt(10, i), max_new=20) for i in range(3)]
    eng.step()
    eng.step()
    assert all(s.output for s in streams)
    eng.add("b", prompt(200, 100), max_new=2)
    plan = eng.step()
    assert set(streams) <= set(plan.decodes)
    assert sum(c.length for c in plan.prefills) + 3 <= 64  # the decode rows count too


# -- prefix sharing -------------------------------------------------------------------


def test_prefix_match_is_taken_when_prefill_starts() -> None:
    eng = FakeEngine(128, max_running=2, token_budget=64)
    system = prompt(200, 7000)
    a = eng.add("a", [*system, *prompt(10, 1)], max_new=5)
    b = eng.add("b", [*system, *prompt(10, 50)], max_new=5)
    eng.step()
    assert eng.sched.running == [a, b]  # both admitted...
    assert b.table is None  # ...but b has not started: the budget went to a
    while b.table is None:
        eng.step()
    assert b.match is not None
    assert b.match.hit_type in (HitType.PREFIX, HitType.LCP)
    assert b.match.num_tokens >= 192  # what a had committed when b started
    shared = b.match.num_tokens // BS
    assert a.table is not None
    assert b.table.block_ids[:shared] == a.table.block_ids[:shared]
    for block_id in a.table.block_ids[:shared]:
        assert eng.kv.pool.blocks[block_id].ref_count == 2
    eng.run()
    assert a.output == a.expected_output()
    assert b.output == b.expected_output()
    assert eng.kv.pool.num_used == 0


def test_repeated_prompt_reuses_the_cache_after_the_first_finishes() -> None:
    eng = FakeEngine(64)
    eng.add("a", prompt(40), max_new=10)  # 49 computed tokens: 3 full blocks cached
    eng.run()
    again = eng.add("b", prompt(40), max_new=3)
    plan = eng.step()
    assert again.match is not None
    assert again.match.hit_type is HitType.EXACT
    assert again.match.num_tokens == 39
    assert plan.prefills == []  # nothing left to prefill: straight to its first decode
    assert plan.decodes == [again]
    assert len(plan.copies) == 1  # the shared tail block is copied before the write
    assert plan.copies[0].num_tokens == 39 - 2 * BS
    eng.run()
    assert again.output == again.expected_output()
    assert eng.kv.pool.num_used == 0


# -- preemption and overflow --------------------------------------------------------


def test_out_of_blocks_preempts_the_most_recently_admitted() -> None:
    eng = FakeEngine(6, max_running=2)  # 96 slots; a alone ends at 80 tokens
    a = eng.add("a", prompt(20, 1), max_new=60)
    b = eng.add("b", prompt(20, 500), max_new=30)
    c = eng.add("c", prompt(5, 900), max_new=2)
    preempted: list[FakeSeq] = []
    kept: list[int] = []
    while eng.sched.has_work:
        plan = eng.step()
        if plan.preempted and not preempted:
            preempted = list(plan.preempted)
            assert preempted == [b]  # the newest of a and b
            assert b not in plan.decodes
            assert list(eng.sched.waiting) == [b, c]  # requeued first in line
            assert (b.table, b.num_computed, b.phase) == (None, 0, Phase.QUEUED)
            kept = list(b.tokens)
            assert len(b.output) > 0
        if preempted:
            assert b.tokens[: len(kept)] == kept  # generated tokens are kept
        assert len(eng.plans) < 1000
    assert preempted
    assert [s.request_id for s in eng.done] == ["a", "b", "c"]
    for seq in (a, b, c):
        assert seq.output == seq.expected_output()  # nothing lost, only recomputed
    assert eng.kv.pool.num_used == 0


def test_preempted_sequence_may_rejoin_from_its_own_cached_blocks() -> None:
    eng = FakeEngine(8, max_running=2)  # 128 slots; each needs 7 blocks at the end
    a = eng.add("a", prompt(40, 1), max_new=60)
    b = eng.add("b", prompt(40, 500), max_new=60)
    preemptions = 0
    while eng.sched.has_work:
        plan = eng.step()
        assert a not in plan.preempted  # the oldest keeps running
        if b in plan.preempted:
            preemptions += 1
            if b in eng.sched.running:  # re-admitted in the same step
                assert b.match is not None
                assert b.match.num_tokens > 0  # its committed blocks were still cached
                assert b.num_computed == b.match.num_tokens
        assert len(eng.plans) < 1000
    assert preemptions > 0
    assert (eng.kv.queries, eng.kv.query_tokens) == (2, 80)  # recomputes are no new queries
    assert [s.request_id for s in eng.done] == ["a", "b"]
    assert a.output == a.expected_output()
    assert b.output == b.expected_output()
    assert eng.kv.pool.num_used == 0


def test_lone_sequence_that_cannot_fit_overflows() -> None:
    eng = FakeEngine(4)  # 64 slots
    big = eng.add("big", prompt(100), max_new=2)
    eng.run()
    assert eng.overflowed == [big]
    assert eng.done == []
    assert big.table is None
    assert eng.kv.pool.num_used == 0


def test_lone_sequence_outgrowing_the_pool_while_decoding_overflows() -> None:
    eng = FakeEngine(2)  # 32 slots
    seq = eng.add("a", prompt(20), max_new=50)
    eng.run()
    assert eng.overflowed == [seq]
    assert len(seq.tokens) == 2 * BS + 1  # it decoded until the pool was full
    assert eng.kv.pool.num_used == 0


def test_borrowed_tail_without_a_free_block_does_not_crash_schedule() -> None:
    eng = FakeEngine(3)  # 48 slots
    head = prompt(32, 1)
    eng.add("a", head, max_new=17)  # 3 full blocks cached: head and 16 outputs
    eng.run()
    a = eng.done[0]
    # b shares all three blocks, the last one only in part, and must write after that.
    b = eng.add("b", [*a.tokens[:34], 7, 7, 7, 7, 7], max_new=1)
    eng.run()  # b needs 4 blocks: it can only overflow
    assert eng.overflowed == [b]
    assert eng.kv.pool.num_used == 0


# -- removal ----------------------------------------------------------------------------


def test_remove_frees_blocks_of_a_running_sequence() -> None:
    eng = FakeEngine(16, max_running=2)
    a = eng.add("a", prompt(40), max_new=50)
    b = eng.add("b", prompt(40, 500), max_new=50)
    eng.step()
    used = eng.kv.pool.num_used
    assert eng.sched.remove("a") is a
    assert a.table is None
    assert a.num_computed == 0
    assert eng.kv.pool.num_used == used - 3
    assert eng.sched.running == [b]


def test_remove_of_a_waiting_sequence_and_of_an_unknown_id() -> None:
    eng = FakeEngine(16, max_running=1)
    eng.add("a", prompt(5))
    b = eng.add("b", prompt(5, 50))
    eng.step()
    assert eng.sched.remove("b") is b
    assert list(eng.sched.waiting) == []
    assert eng.sched.remove("nope") is None


def test_removing_everything_frees_every_block() -> None:
    eng = FakeEngine(32, max_running=4, token_budget=40)
    for i in range(6):
        eng.add(f"r{i}", prompt(30 + 7 * i, 100 * i), max_new=20)
    for _ in range(5):
        eng.step()
    assert eng.kv.pool.num_used > 0
    for seq in list(eng.sched.all()):
        eng.sched.remove(seq.request_id)
    assert not eng.sched.has_work
    assert eng.kv.pool.num_used == 0
    assert eng.kv.pool.num_free == eng.kv.pool.num_blocks


# -- randomized ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed",
    [
        0,
        3,
        # This load starts a prefill on a borrowed tail while the pool is full.
        pytest.param(2024),
    ],
)
def test_randomized_load_finishes_every_request_correctly(seed: int) -> None:
    rng = random.Random(seed)
    eng = FakeEngine(20, max_running=4, token_budget=48)
    systems = [prompt(40, 10_000), prompt(25, 20_000)]  # shared prefixes, cut anywhere
    added: list[FakeSeq] = []
    aborted: set[str] = set()
    for i in range(300):
        if i < 150 and rng.random() < 0.35:
            head = rng.choice(systems)[: rng.randrange(10, 41)]
            tail = [rng.randrange(5) for _ in range(rng.randrange(1, 30))]
            added.append(eng.add(f"r{i}", head + tail, max_new=rng.randrange(1, 80)))
        if added and rng.random() < 0.02:
            victim = rng.choice(added)
            if eng.sched.remove(victim.request_id) is not None:
                aborted.add(victim.request_id)
        if eng.sched.has_work:
            eng.step()
    eng.run()
    finished = {s.request_id for s in eng.done} | {s.request_id for s in eng.overflowed}
    assert finished | aborted == {s.request_id for s in added}
    for seq in eng.done:
        assert seq.output == seq.expected_output()
    assert any(p.preempted for p in eng.plans)
    assert any(p.copies for p in eng.plans)
    assert eng.kv.pool.num_used == 0


def test_a_prompt_sharing_a_prefix_being_computed_waits_for_its_blocks() -> None:
    eng = FakeEngine(256, max_running=4, token_budget=64)  # 256 tokens a step
    system = prompt(150, 9000)
    a = eng.add("a", [*system, *prompt(10, 1)], max_new=2)
    b = eng.add("b", [*system, *prompt(10, 50)], max_new=2)
    c = eng.add("c", prompt(30, 700), max_new=2)  # unrelated: joins the burst at once
    plan = eng.step()
    assert [ch.seq for ch in plan.prefills] == [a, c]  # b would recompute a's prefix
    while b.table is None:
        eng.step()
    assert b.match is not None and b.match.num_tokens >= 144
    eng.run()
    assert a.output == a.expected_output() and b.output == b.expected_output()


def test_a_shared_prefix_burst_starts_decoding_together() -> None:
    eng = FakeEngine(4096, max_running=16, token_budget=512)
    system = prompt(1008, 90000)
    seqs = [eng.add(f"r{i}", [*system, *prompt(206, 1000 * i)], max_new=4) for i in range(16)]
    first_token_step: dict[str, int] = {}
    while len(first_token_step) < len(seqs):
        eng.step()
        for s in seqs:
            if s.output:
                first_token_step.setdefault(s.request_id, len(eng.plans))
    # The first prompt computes the shared prefix; the rest hit it and decode as one batch.
    assert len(set(first_token_step.values())) == 1, first_token_step
    assert all(s.match is not None and s.match.num_tokens >= 1008 for s in seqs[1:])
    eng.run()


# -- time budgets (with a cost model) ---------------------------------------------


def _prefill_cost(engine: FakeEngine, plan: StepPlan[FakeSeq]) -> float:
    assert engine.sched.cost is not None
    return engine.sched.cost.prefill_s([ChunkShape(c.start, c.length) for c in plan.prefills])


def _decode_cost(engine: FakeEngine, plan: StepPlan[FakeSeq]) -> float:
    assert engine.sched.cost is not None
    context = sum(s.table.num_tokens for s in plan.decodes if s.table is not None)
    return engine.sched.cost.decode_s(len(plan.decodes), context)


def test_streams_keep_their_step_time_while_a_long_prompt_waits_its_turn() -> None:
    """A long prompt beside decoding streams gets only what fits the step target,
    in chunks that shrink as its context grows; alone, it gets full chunks."""
    engine = FakeEngine(num_blocks=2000, max_running=8, cost=StepCostModel(), max_step_s=0.4)
    chats = [engine.add(f"chat{i}", list(range(i, i + 40)), max_new=400) for i in range(4)]
    while any(c.phase is not Phase.GENERATION for c in chats):
        engine.step()
    long = engine.add("long", [7 + i % 90 for i in range(6000)], max_new=2)
    chunks = []
    while long.phase in (Phase.QUEUED, Phase.PREFILL) and len(chats[0].output) < 390:
        plan = engine.step()
        assert plan.decodes, "the streams decode every step"
        starved = [c.length for c in plan.prefills] == [MIN_CHUNK]  # these may overrun
        if plan.prefills and not starved:  # (rows have one more token than when planned)
            assert _decode_cost(engine, plan) + _prefill_cost(engine, plan) <= 0.4 * 1.01
        chunks += [c.length for c in plan.prefills]
    assert chunks[0] > chunks[len(chunks) // 2] > 0  # deeper into the prompt: smaller
    for c in chats:
        engine.sched.remove(c.request_id)
    plan = engine.step()
    assert len(plan.prefills) == 1 and not plan.decodes
    assert _prefill_cost(engine, plan) <= IDLE_STEP_S
    assert plan.prefills[0].length > chunks[-1]  # nothing decoding: bigger chunks


def test_a_short_prompt_beside_a_long_prefill_is_prefilled_next_step() -> None:
    engine = FakeEngine(num_blocks=2000, cost=StepCostModel())
    long = engine.add("long", [7 + i % 90 for i in range(6000)], max_new=2)
    for _ in range(3):
        plan = engine.step()
        assert [c.seq for c in plan.prefills] == [long]
        assert _prefill_cost(engine, plan) <= IDLE_STEP_S
    short = engine.add("short", list(range(100, 210)), max_new=4)
    plan = engine.step()
    assert plan.prefills[0].seq is short and plan.prefills[0].length == 109  # first, whole
    assert short in plan.decodes or short.phase is Phase.READY
    assert _prefill_cost(engine, plan) <= IDLE_STEP_S
    while long.phase is not Phase.GENERATION:  # its last chunk too: it is not a new prompt
        plan = engine.step()
        assert _prefill_cost(engine, plan) <= IDLE_STEP_S


def test_a_prompt_too_costly_for_any_step_still_advances() -> None:
    """Even when no chunk fits the target, a prompt gets MIN_CHUNK tokens at times."""
    engine = FakeEngine(num_blocks=2000, cost=StepCostModel(), max_step_s=0.001)
    engine.add("chat", list(range(40)), max_new=10_000)
    engine.step()
    engine.step()
    long = engine.add("long", [7 + i % 90 for i in range(3000)], max_new=2)
    got = []
    for _ in range(3 * STARVE_STEPS + 3):
        got += [c.length for c in engine.step().prefills if c.seq is long]
    assert got == [MIN_CHUNK] * len(got) and 2 <= len(got) <= 4


def test_a_lone_prompt_the_cost_model_finds_too_slow_is_prefilled_not_dropped() -> None:
    """A slow machine (cost model: no chunk fits the idle step) must not read as a full pool."""
    engine = FakeEngine(num_blocks=2000, cost=StepCostModel())
    assert engine.sched.cost is not None
    for _ in range(8):  # every chunk measured at 100 s
        engine.sched.cost.observe_prefill([ChunkShape(0, 512)], 100.0)
    seq = engine.add("long", [7 + i % 90 for i in range(1500)], max_new=2)
    plan = engine.step()
    assert not plan.overflowed
    assert [c.length for c in plan.prefills if c.seq is seq] == [MIN_CHUNK]


def test_a_burst_that_outnumbers_the_streams_prefills_at_once() -> None:
    """New prompts outnumbering the running streams finish in one step, over the target."""
    engine = FakeEngine(num_blocks=2000, max_running=16, cost=StepCostModel(), max_step_s=0.2)
    engine.add("first", list(range(60)), max_new=50)
    engine.step()
    burst = [engine.add(f"b{i}", list(range(i, i + 60)), max_new=5) for i in range(12)]
    plan = engine.step()
    assert {c.seq.request_id for c in plan.prefills} == {s.request_id for s in burst}
    assert _prefill_cost(engine, plan) > 0.2


@pytest.mark.parametrize("seed", range(3))
def test_randomized_load_with_time_budgets_finishes_correctly(seed: int) -> None:
    rng = random.Random(seed)
    engine = FakeEngine(num_blocks=300, max_running=6, cost=StepCostModel(), max_step_s=0.15)
    seqs = [
        engine.add(f"r{i}", [rng.randrange(1, 50) for _ in range(rng.randrange(2, 900))], 8)
        for i in range(24)
    ]
    engine.run()
    assert sorted(s.request_id for s in engine.done) == sorted(s.request_id for s in seqs)
    for seq in engine.done:
        assert seq.output == seq.expected_output()


def test_a_short_prompt_beside_many_streams_goes_in_whole() -> None:
    """One short stall beats a prompt trickling in (or starving) over many steps."""
    engine = FakeEngine(num_blocks=2000, max_running=16, cost=StepCostModel(), max_step_s=0.05)
    for i in range(15):
        engine.add(f"s{i}", list(range(i, i + 60)), max_new=50)
    engine.step()
    late = engine.add("late", list(range(500, 560)), max_new=5)
    plan = engine.step()
    assert len(plan.decodes) >= 15
    assert [(c.seq, c.length) for c in plan.prefills] == [(late, 59)]
    assert _prefill_cost(engine, plan) > 0.05  # over the target, once
