"""An LRU of vision-tower outputs, keyed by image content and preprocessing settings.

The same image sent again (a follow-up turn that repeats the conversation, or the
same screenshot in many requests) skips decoding, preprocessing and the tower: the
most expensive part of a vision prefill. Only the engine thread uses it; the
counters are read by /v1/status and /metrics from other threads (plain ints).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from vllm_mlx.backend.media import VisionCacheStats

V = TypeVar("V")


class VisionCache(Generic[V]):
    """``capacity`` most recently used values; capacity 0 stores nothing (disabled)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("the vision cache size must be >= 0")
        self.capacity = capacity
        self._entries: OrderedDict[str, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> V | None:
        """The cached value, now the most recently used; counts a hit or a miss."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: V) -> None:
        if self.capacity == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def stats(self) -> VisionCacheStats:
        return VisionCacheStats(
            self.capacity > 0, self.capacity, len(self._entries), self.hits, self.misses
        )
