"""Waiting and running queues. Pure Python: no MLX, testable without a model."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Schedulable(Protocol):
    @property
    def request_id(self) -> str: ...


S = TypeVar("S", bound=Schedulable)


class Scheduler(Generic[S]):
    """First come, first served admission of up to ``max_running`` sequences."""

    def __init__(self, max_running: int = 1) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.max_running = max_running
        self.waiting: deque[S] = deque()
        self.running: list[S] = []

    def add(self, seq: S) -> None:
        self.waiting.append(seq)

    def admit(self) -> list[S]:
        """Move waiting sequences into the running set while there is room."""
        admitted: list[S] = []
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting.popleft()
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def remove(self, request_id: str) -> S | None:
        """Take a sequence out of whichever queue holds it."""
        for i, seq in enumerate(self.running):
            if seq.request_id == request_id:
                return self.running.pop(i)
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
