"""Continuous-batching scheduler. Pure Python: no MLX, testable without a model.

Every step it decides, in this order:

1. decode rows: each generating sequence gets one KV slot; when the pool is
   out of blocks the most recently admitted sequence is preempted (its blocks
   are freed and it is requeued first in line, to be recomputed later);
2. admission: waiting sequences join while ``max_running`` and free blocks allow;
3. prefill chunks: prompts advance by at most the remaining token budget, so a
   long prompt never stalls the running streams for more than one chunk.

A burst (several prompts prefilling, or one while nothing streams) prefills
together: up to ``burst_factor`` chunks' worth of prompts per step, each chunk
still at most ``token_budget`` long. A prompt that is done waits for the rest of
its burst when that finishes in the next step (at most ``MAX_HOLD_STEPS`` steps),
so the burst decodes as one full batch instead of trickling in at small batches
while every step also carries a prefill. Streams see one longer stall instead of
many: a long prompt alone still advances one chunk a step.

With a cost model (engine.step_cost) the budget is also one of time. While
streams decode, a step's prefill may take what is left of ``max_step_s`` (by
default twice the decode pass) after the decode pass, and the prompts nearest to
done go first: a long prompt's chunks shrink as its context grows, and a short
prompt that arrives beside it is prefilled in the next steps. Only new prompts
prefilled whole in one chunk may overrun it: those of a burst that outnumbers the
running streams, and one whose prefill stalls the streams once for less than
``IDLE_STEP_S`` (rather than in slivers over many steps). With nothing decoding,
a step's prefill is kept near ``IDLE_STEP_S`` so that new arrivals wait at most
about that long. A prompt that gets no chunk for ``STARVE_STEPS`` steps gets
``MIN_CHUNK`` tokens regardless.

A sequence's tokens are its prompt plus its output. All but the last are fed
by prefill; the last is always the input of its next decode row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from vllm_mlx.engine.kv.manager import (
    BlockCopy,
    BlockTable,
    KVCacheManager,
    PrefixMatch,
    common_prefix,
)
from vllm_mlx.engine.step_cost import ChunkShape, StepCostModel


class Phase(StrEnum):
    QUEUED = "queued"  # waiting for admission (or preempted)
    PREFILL = "prefill"  # feeding tokens[:-1] into the cache, chunk by chunk
    READY = "ready"  # prompt cached; its first decode waits for the rest of its burst
    GENERATION = "generation"  # one decode row per step


MAX_HOLD_STEPS = 2  # steps a ready prompt may wait for its burst
IDLE_STEP_S = 1.0  # prefill seconds per step while nothing decodes; a new prompt's stall
STEP_FACTOR = 2.0  # default step target: this many decode passes
MIN_CHUNK = 16  # smaller chunks pay a forward's fixed cost for too little
STARVE_STEPS = 32  # steps a prompt may go without a chunk


class Schedulable(Protocol):
    phase: Phase
    table: BlockTable | None
    match: PrefixMatch | None
    num_computed: int  # tokens whose KV is in the cache

    @property
    def request_id(self) -> str: ...

    @property
    def tokens(self) -> list[int]: ...

    @property
    def cache_keys(self) -> list[int]: ...  # tokens as the prefix cache sees them (images keyed)


S = TypeVar("S", bound=Schedulable)


@dataclass(frozen=True)
class PrefillChunk(Generic[S]):
    seq: S
    start: int  # position of the chunk's first token
    length: int


@dataclass
class StepPlan(Generic[S]):
    """What one engine step runs; copies must happen before the forward passes."""

    prefills: list[PrefillChunk[S]] = field(default_factory=list)
    decodes: list[S] = field(default_factory=list)
    copies: list[BlockCopy] = field(default_factory=list)
    preempted: list[S] = field(default_factory=list)  # requeued this step
    overflowed: list[S] = field(default_factory=list)  # cannot fit even alone: finish them

    @property
    def empty(self) -> bool:
        return not (self.prefills or self.decodes)


class Scheduler(Generic[S]):
    """Waiting and running queues over one KV cache manager."""

    def __init__(
        self,
        kv: KVCacheManager,
        max_running: int = 1,
        token_budget: int = 512,
        burst_factor: int = 4,
        cost: StepCostModel | None = None,
        max_step_s: float | None = None,
    ) -> None:
        if max_running < 1 or token_budget < 1 or burst_factor < 1:
            raise ValueError("max_running, token_budget and burst_factor must be at least 1")
        self.kv = kv
        self.cost = cost  # None: budgets in tokens only
        self.max_step_s = max_step_s  # None: STEP_FACTOR decode passes
        self._starved: dict[str, int] = {}  # prefilling sequence -> steps without a chunk
        self.max_running = max_running
        self.token_budget = token_budget  # tokens per step while streams run; also per chunk
        self.burst_budget = token_budget * burst_factor  # tokens per step in a burst
        self._held: dict[str, int] = {}  # ready sequence -> steps it has waited
        self.waiting: deque[S] = deque()
        self.running: list[S] = []

    def add(self, seq: S) -> None:
        seq.phase = Phase.QUEUED
        self.waiting.append(seq)

    def remove(self, request_id: str) -> S | None:
        """Take a sequence out of whichever queue holds it and free its blocks."""
        for seq in self.running:
            if seq.request_id == request_id:
                self.running.remove(seq)
                self._release(seq)
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                return seq
        return None

    def all(self) -> Iterator[S]:
        yield from self.running
        yield from self.waiting

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- one step -------------------------------------------------------------

    def schedule(self) -> StepPlan[S]:
        plan: StepPlan[S] = StepPlan()
        self._plan_decodes(plan)
        self._admit()
        self._plan_prefills(plan)
        if plan.empty and self.running:
            self._unblock(plan)
        return plan

    def _unblock(self, plan: StepPlan[S]) -> None:
        """Prefills stuck on a full pool: requeue the newest, or give up on a lone one."""
        seq = self.running[-1]
        if len(self.running) > 1:
            self._preempt(seq, plan)
        else:
            self.running.remove(seq)
            self._release(seq)
            plan.overflowed.append(seq)

    def _plan_decodes(self, plan: StepPlan[S]) -> None:
        for seq in list(self.running):
            if seq.phase is not Phase.GENERATION or seq not in self.running:
                continue
            if self._make_room(seq, 1, plan):
                plan.copies += self.kv.append_slots(self._table(seq), 1)
                plan.decodes.append(seq)

    def _make_room(self, seq: S, num_tokens: int, plan: StepPlan[S]) -> bool:
        """Preempt later sequences until ``seq`` fits; False if it was preempted itself."""
        while not self.kv.can_append(self._table(seq), num_tokens):
            victim = self.running[-1]
            if victim is seq and len(self.running) == 1:
                self.running.remove(seq)
                self._release(seq)
                plan.overflowed.append(seq)
                return False
            self._preempt(victim, plan)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: S, plan: StepPlan[S]) -> None:
        self.running.remove(seq)
        if seq in plan.decodes:
            plan.decodes.remove(seq)
        self._release(seq)
        seq.phase = Phase.QUEUED
        self.waiting.appendleft(seq)
        plan.preempted.append(seq)

    def _admit(self) -> None:
        reserve = len(self.running)  # one block of headroom per running sequence
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting[0]
            need = self._blocks_to_admit(seq)
            if need + reserve > self.kv.pool.num_free and self.running:
                return  # wait for blocks to free up; FIFO keeps arrival order fair
            self.waiting.popleft()
            seq.phase = Phase.PREFILL
            self.running.append(seq)
            reserve += need + 1

    def _blocks_to_admit(self, seq: S) -> int:
        """Free blocks a sequence's prefill takes: all of them, less cached blocks in use.

        Cached blocks nobody holds sit in the free queue, so sharing them still
        takes them out of it.
        """
        pool = self.kv.pool
        match = self.kv.match_prefix(seq.cache_keys)
        shared = sum(1 for b in match.block_ids if pool.blocks[b].ref_count > 0)
        return -(-len(seq.tokens) // self.kv.block_size) - shared

    def _plan_prefills(self, plan: StepPlan[S]) -> None:
        prefilling = [s for s in self.running if s.phase is Phase.PREFILL]
        burst = len(prefilling) > min(len(plan.decodes), 1)
        budget = (self.burst_budget if burst else self.token_budget) - len(plan.decodes)
        seconds = self._prefill_seconds(plan)
        if seconds is not None:  # nearest to done first
            prefilling.sort(key=lambda s: len(s.tokens) - self._computed(s))
        outnumbered = len(prefilling) > len(plan.decodes)
        shapes: list[ChunkShape] = []
        for seq in prefilling:
            if budget <= 0:
                break
            if seq.table is None:
                if self._shares_pending_prefix(seq, plan):
                    continue  # start next step, when the shared blocks are cached
                seq.table, match = self.kv.begin(seq.cache_keys, recompute=seq.match is not None)
                seq.num_computed = match.num_tokens
                if seq.match is None:  # a recompute after preemption keeps the first hit
                    seq.match = match
            remaining = len(seq.tokens) - 1 - seq.num_computed
            chunk = min(remaining, budget, self.token_budget)
            if seconds is not None and not self._goes_whole(seq, chunk, shapes, outnumbered):
                # A step with nothing else to run always advances a prompt: an empty plan
                # would read as a full pool and drop the request.
                idle = not plan.decodes and not shapes
                chunk = self._timed_chunk(seq, chunk, shapes, seconds, idle)
            length = min(chunk, self._fits(seq.table, remaining))
            if length > 0:
                plan.copies += self.kv.append_slots(seq.table, length)
                plan.prefills.append(PrefillChunk(seq, seq.num_computed, length))
                shapes.append(ChunkShape(seq.num_computed, length))
                budget -= length
                self._starved.pop(seq.request_id, None)
            elif remaining > 0:
                self._starved[seq.request_id] = self._starved.get(seq.request_id, 0) + 1
            if length == remaining:
                seq.phase = Phase.READY
                self._held[seq.request_id] = 0
        self._start_ready(plan, burst)

    def _goes_whole(self, seq: S, chunk: int, planned: list[ChunkShape], outnumbered: bool) -> bool:
        """A new prompt prefilled whole in this chunk, over the step's time budget:
        one of a burst, or one whose whole prefill (with the step's) is a short stall."""
        assert self.cost is not None
        start = seq.match.num_tokens if seq.match is not None else 0
        if chunk != len(seq.tokens) - 1 - seq.num_computed or seq.num_computed != start:
            return False
        cost = self.cost.prefill_s([*planned, ChunkShape(start, chunk)])
        return outnumbered or cost <= IDLE_STEP_S

    def _prefill_seconds(self, plan: StepPlan[S]) -> float | None:
        """Time this step's prefill may take; None without a cost model."""
        if self.cost is None:
            return None
        if not plan.decodes:
            return max(IDLE_STEP_S, self.max_step_s or 0.0)
        context = sum(self._table(s).num_tokens for s in plan.decodes)
        decode = self.cost.decode_s(len(plan.decodes), context)
        target = self.max_step_s if self.max_step_s is not None else STEP_FACTOR * decode
        return max(0.0, target - decode)

    def _timed_chunk(
        self, seq: S, wanted: int, planned: list[ChunkShape], seconds: float, idle: bool
    ) -> int:
        """The part of ``wanted`` that fits the step's time; nothing if that is a sliver
        (unless the step would otherwise be ``idle``)."""
        assert self.cost is not None
        if wanted <= 0:
            return 0
        fits = self.cost.max_tokens(planned, seq.num_computed, wanted, seconds)
        if fits >= min(wanted, MIN_CHUNK):
            return fits
        if idle or self._starved.get(seq.request_id, 0) >= STARVE_STEPS:
            return min(wanted, MIN_CHUNK)
        return 0

    def _burst_ends_next_step(self, plan: StepPlan[S]) -> bool:
        """Would every prompt still prefilling after this step finish in the next one?"""
        planned = {id(c.seq): c.length for c in plan.prefills}
        left = [
            len(s.tokens) - 1 - self._computed(s) - planned.get(id(s), 0)
            for s in self.running
            if s.phase is Phase.PREFILL
        ]
        return bool(left) and max(left) <= self.token_budget and sum(left) <= self.burst_budget

    def _computed(self, seq: S) -> int:
        """Tokens whose KV is cached: so far, or what a prompt not started yet will hit."""
        if seq.table is not None:
            return seq.num_computed
        return self.kv.match_prefix(seq.cache_keys).num_tokens

    def _shares_pending_prefix(self, seq: S, plan: StepPlan[S]) -> bool:
        """Would ``seq`` share a worthwhile prefix with a prompt this step is computing?"""
        worth = max(self.kv.block_size, self.token_budget // 4)
        for chunk in plan.prefills:
            other = chunk.seq.cache_keys[: chunk.start + chunk.length]
            # Blocks before the chunk are cached already; what it computes now is not.
            if common_prefix(seq.cache_keys, other) - chunk.start >= worth:
                return True
        return False

    def _start_ready(self, plan: StepPlan[S], burst: bool) -> None:
        """Ready prompts join this step's decode (their last token is its input)...

        ...unless the rest of their burst is still prefilling and finishes next step.
        """
        ready = [s for s in self.running if s.phase is Phase.READY]
        wait = burst and bool(ready) and self._burst_ends_next_step(plan)
        for seq in ready:
            held = self._held.get(seq.request_id, 0)
            if wait and held < MAX_HOLD_STEPS:
                self._held[seq.request_id] = held + 1
                continue
            if not self.kv.can_append(self._table(seq), 1):
                continue  # the next step's decode rows make room (or preempt)
            self._held.pop(seq.request_id, None)
            seq.phase = Phase.GENERATION
            plan.copies += self.kv.append_slots(self._table(seq), 1)
            plan.decodes.append(seq)

    def _fits(self, table: BlockTable, wanted: int) -> int:
        """How many of ``wanted`` new tokens the free blocks can hold."""
        bs = self.kv.block_size
        free_in_tail = len(table.block_ids) * bs - table.num_tokens
        cow = 1 if table.borrowed_tail else 0
        if self.kv.pool.num_free < cow:
            return 0  # the borrowed tail needs a private copy before any write
        spare = max(0, self.kv.pool.num_free - cow) * bs + free_in_tail
        return max(0, min(wanted, spare))

    def _table(self, seq: S) -> BlockTable:
        if seq.table is None:
            raise RuntimeError(f"sequence {seq.request_id} has no block table")
        return seq.table

    def _release(self, seq: S) -> None:
        self._held.pop(seq.request_id, None)
        self._starved.pop(seq.request_id, None)
        if seq.table is not None:
            self.kv.free(seq.table)
        seq.table = None
        seq.num_computed = 0
