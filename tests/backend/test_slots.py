"""Decode slots: a churning batch read from dense slots equals each row's own mlx-lm cache.

Rows join, leave, come back after a gap (as after preemption), change order and
leave holes; the slot arrays grow past their first column and row chunks. Every
step's logits must match a contiguous mlx-lm cache per row, and the pool must hold
the same K/V as if it had been written directly (prefix reuse reads it).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.models.cache import make_prompt_cache

from vllm_mlx.backend.loader import load_model
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.runner import ModelRunner
from vllm_mlx.backend.slots import DecodeSlots, pool_slot
from vllm_mlx.config import ModelConfig

BLOCK = 4
TOL = 1e-4


@pytest.fixture(scope="module")
def loaded(tiny_llama_path: Path) -> LoadedModel:
    return load_model(ModelConfig(model=str(tiny_llama_path)))


class Row:
    """One sequence: its reference cache, its block table and the tokens so far."""

    def __init__(self, loaded: LoadedModel, runner: ModelRunner, seed: int, blocks: list[int]):
        self.model = loaded.model
        self.cache = make_prompt_cache(loaded.model)
        self.tokens = [(seed * 7 + i * 3) % 50 + 2 for i in range(5 + seed % 7)]
        self.table = blocks
        runner.prefill(self.tokens[:-1], self.table, 0)
        mx.eval(self.model(mx.array([self.tokens[:-1]]), cache=self.cache))

    def reference(self) -> mx.array:
        """The reference logits for the last token (fed now)."""
        return self.model(mx.array([[self.tokens[-1]]]), cache=self.cache)[0, -1]


def _step(runner: ModelRunner, rows: dict[str, Row]) -> None:
    keys = list(rows)
    feed = [rows[k].tokens[-1] for k in keys]
    got = runner.decode(
        feed, [rows[k].table for k in keys], [len(rows[k].tokens) - 1 for k in keys], keys
    )
    want = [rows[k].reference() for k in keys]
    mx.eval(got, want, runner.storage.state())
    for i, key in enumerate(keys):
        err = mx.max(mx.abs(got[i] - want[i])).item()
        assert err < TOL, f"row {key}: max |slots - reference| = {err}"
        rows[key].tokens.append(int(mx.argmax(want[i]).item()))


def _assert_pool_holds(loaded: LoadedModel, runner: ModelRunner, row: Row) -> None:
    """The pool holds the row's K/V (all but its last token) as a direct prefill writes it."""
    n = len(row.tokens) - 1
    direct = ModelRunner(loaded, BLOCK)
    direct.ensure_blocks(runner.storage.capacity_blocks)
    direct.prefill(row.tokens[:n], row.table, 0)
    mx.eval(runner.storage.state(), direct.storage.state())
    idx = mx.array([pool_slot(row.table, p, BLOCK) for p in range(n)])
    ours_pools = [*runner.storage.keys, *runner.storage.values]
    for ours, theirs in zip(
        ours_pools, [*direct.storage.keys, *direct.storage.values], strict=True
    ):
        assert ours is not None and theirs is not None
        assert mx.max(mx.abs(ours[:, :, idx] - theirs[:, :, idx])).item() < TOL


def test_churning_batch_matches_reference_caches(loaded: LoadedModel) -> None:
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(400)
    free = iter(range(1, 400))

    def new_row(seed: int) -> Row:
        return Row(loaded, runner, seed, [next(free) for _ in range(20)])

    rows = {k: new_row(i) for i, k in enumerate("abc")}
    for _ in range(3):
        _step(runner, rows)
    rows["d"] = new_row(3)  # join
    _step(runner, rows)
    del rows["b"]  # leave: a hole in the middle
    _step(runner, rows)
    rows = {k: rows[k] for k in ("d", "c", "a")}  # new order
    _step(runner, rows)
    rows["e"] = new_row(4)  # fills the hole
    rows["f"] = new_row(5)  # and grows the rows past one chunk
    for _ in range(2):
        _step(runner, rows)
    gone = rows.pop("a")
    _step(runner, rows)
    # "a" comes back after a gap, as after preemption: its slot is rebuilt from the pool.
    runner.prefill(gone.tokens[-3:-1], gone.table, len(gone.tokens) - 3)
    rows["a"] = gone
    _step(runner, rows)
    assert runner.storage.slots.num_live == len(rows)


def test_slots_grow_past_their_first_columns(loaded: LoadedModel) -> None:
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(200)
    rows = {
        k: Row(loaded, runner, i, list(range(1 + 100 * i, 100 * (i + 1))))
        for i, k in enumerate("xy")
    }
    for _ in range(260):  # past 256 columns: the arrays grow once
        _step(runner, rows)


def test_pool_holds_what_slots_decoded(loaded: LoadedModel) -> None:
    """Tokens decoded through slots are in the pool once a prefill could read them."""
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(100)
    rows = {
        "p": Row(loaded, runner, 2, list(range(1, 40))),
        "q": Row(loaded, runner, 3, list(range(40, 80))),
    }
    for _ in range(6):
        _step(runner, rows)
    runner.prefill([5, 6, 7], [90], 0)  # another prompt: slots flush before it runs
    _assert_pool_holds(loaded, runner, rows["p"])


def test_plan_keeps_slots_and_frees_on_gaps() -> None:
    slots = DecodeSlots(num_layers=1, block_size=64, max_tokens=10_000)
    first = slots.plan(["a", "b"], [[1], [2]], [3, 5])
    assert first is not None and [j.slot for j in first.joins] == [0, 1]
    assert first.feed is None and first.back is None
    again = slots.plan(["b", "a"], [[2], [1]], [6, 4])
    assert again is not None and again.joins == ()
    assert again.back is not None and again.back.tolist() == [1, 0]
    gap = slots.plan(["a", "c"], [[1], [3]], [9, 2])  # "a" skipped ahead: rebuilt
    assert gap is not None and {(j.slot, j.length) for j in gap.joins} == {(0, 9), (1, 2)}


def test_plan_declines_past_its_budget() -> None:
    slots = DecodeSlots(num_layers=1, block_size=64, max_tokens=100)
    assert slots.plan(["a", "b"], [[1], [2]], [60, 10]) is None
    assert slots.num_live == 0


def test_joining_row_reads_blocks_that_a_running_row_decoded(loaded: LoadedModel) -> None:
    """A prompt that hits a running sequence's decoded blocks (a whole-prefix hit, no
    prefill of its own) joins the batch: those tokens must be in the pool by then."""
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(200)
    rows = {
        "p": Row(loaded, runner, 1, list(range(1, 40))),
        "q": Row(loaded, runner, 2, list(range(40, 80))),
    }
    q = rows["q"]
    while (len(q.tokens) - 1) % BLOCK or len(q.tokens) < 12:  # q's next write opens a block
        _step(runner, rows)
    twin = Row.__new__(Row)  # q's conversation again, sharing q's full blocks
    twin.model, twin.cache, twin.tokens = q.model, make_prompt_cache(q.model), list(q.tokens)
    twin.table = q.table[: (len(q.tokens) - 1) // BLOCK] + list(range(120, 140))
    mx.eval(twin.model(mx.array([twin.tokens[:-1]]), cache=twin.cache))
    rows["twin"] = twin
    for _ in range(3):
        _step(runner, rows)


def test_leaving_row_is_flushed_before_its_blocks_are_reused(loaded: LoadedModel) -> None:
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(200)
    rows = {
        k: Row(loaded, runner, i, list(range(1 + 40 * i, 40 * (i + 1))))
        for i, k in enumerate("uvw")
    }
    for _ in range(5):
        _step(runner, rows)
    gone = rows.pop("v")  # finished: its slot frees, and its tokens go to its blocks
    _step(runner, rows)
    _assert_pool_holds(loaded, runner, gone)


def test_lone_row_uses_slots_only_when_its_blocks_are_scattered(loaded: LoadedModel) -> None:
    """One row in consecutive blocks reads a view of the pool; in scattered blocks (a
    prefix hit, then its own blocks) it keeps a slot instead of a gather per step."""
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(100)
    rows = {"run": Row(loaded, runner, 4, list(range(10, 30)))}
    for _ in range(6):
        _step(runner, rows)
    assert runner.storage.slots.num_live == 0
    rows = {"scattered": Row(loaded, runner, 5, [1, *range(40, 80, 2)])}
    for _ in range(6):
        _step(runner, rows)
    assert runner.storage.slots.num_live == 1
    runner.prefill([5, 6, 7], [90], 0)  # another prompt: the slot flushes before it runs
    _assert_pool_holds(loaded, runner, rows["scattered"])
