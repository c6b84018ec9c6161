"""Scheduler: FIFO admission up to max_running, removal from either queue."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vllm_mlx.engine.scheduler import Scheduler


@dataclass
class Seq:
    request_id: str


def _ids(seqs: object) -> list[str]:
    return [s.request_id for s in seqs]  # type: ignore[attr-defined]


def _scheduler(max_running: int, *ids: str) -> Scheduler[Seq]:
    sched: Scheduler[Seq] = Scheduler(max_running)
    for rid in ids:
        sched.add(Seq(rid))
    return sched


def test_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Scheduler(0)


def test_empty_has_no_work() -> None:
    sched: Scheduler[Seq] = Scheduler()
    assert not sched.has_work
    assert sched.admit() == []
    assert list(sched.all()) == []


def test_add_queues_without_running() -> None:
    sched = _scheduler(2, "a")
    assert sched.has_work
    assert _ids(sched.waiting) == ["a"]
    assert sched.running == []


def test_admits_in_arrival_order_up_to_capacity() -> None:
    sched = _scheduler(2, "a", "b", "c", "d")
    assert _ids(sched.admit()) == ["a", "b"]
    assert _ids(sched.running) == ["a", "b"]
    assert _ids(sched.waiting) == ["c", "d"]
    assert sched.admit() == []  # full


def test_freed_slot_goes_to_the_oldest_waiter() -> None:
    sched = _scheduler(2, "a", "b", "c", "d")
    sched.admit()
    assert sched.remove("a") == Seq("a")
    assert _ids(sched.admit()) == ["c"]
    assert _ids(sched.running) == ["b", "c"]
    assert _ids(sched.waiting) == ["d"]


def test_remove_from_waiting() -> None:
    sched = _scheduler(1, "a", "b", "c")
    sched.admit()
    assert sched.remove("b") == Seq("b")
    assert _ids(sched.waiting) == ["c"]
    assert _ids(sched.running) == ["a"]


def test_remove_unknown_returns_none() -> None:
    sched = _scheduler(1, "a")
    assert sched.remove("zzz") is None
    assert sched.remove("a") == Seq("a")
    assert sched.remove("a") is None
    assert not sched.has_work


def test_all_lists_running_then_waiting() -> None:
    sched = _scheduler(2, "a", "b", "c")
    sched.admit()
    assert _ids(sched.all()) == ["a", "b", "c"]


def test_all_can_be_used_while_removing() -> None:
    sched = _scheduler(1, "a", "b", "c")
    sched.admit()
    for seq in list(sched.all()):
        sched.remove(seq.request_id)
    assert not sched.has_work


def test_has_work_tracks_both_queues() -> None:
    sched = _scheduler(1, "a")
    sched.admit()
    assert sched.has_work  # running only
    sched.add(Seq("b"))
    sched.remove("a")
    assert sched.has_work  # waiting only
    sched.remove("b")
    assert not sched.has_work
