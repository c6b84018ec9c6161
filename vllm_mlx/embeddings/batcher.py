"""Length bucketing: which queued inputs share one forward pass. Pure Python.

Inputs are grouped by length bucket (powers of two, at least ``min_bucket``) so a
short text is never padded to a long one's length, and each bucket is cut into
passes of at most ``max_batch_size`` rows and ``max_batch_tokens`` padded tokens::

    lengths  [5, 300, 7, 12, 40]    ->  buckets 16: [5, 7, 12]   64: [40]   512: [300]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int = 64  # rows per forward pass
    max_batch_tokens: int = 16384  # rows x padded length per forward pass
    min_bucket: int = 16  # lengths up to this share the smallest bucket


def bucket_of(length: int, min_bucket: int = 16) -> int:
    """The power-of-two bucket a length falls in (at least ``min_bucket``)."""
    bucket = min_bucket
    while bucket < length:
        bucket *= 2
    return bucket


def plan_batches(lengths: Sequence[int], limits: BatchLimits = BatchLimits()) -> list[list[int]]:
    """Indices into ``lengths`` grouped into forward passes, shortest bucket first.

    Every index appears exactly once; within a pass, indices are ordered by length.
    """
    buckets: dict[int, list[int]] = {}
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        buckets.setdefault(bucket_of(lengths[index], limits.min_bucket), []).append(index)
    passes: list[list[int]] = []
    for bucket in sorted(buckets):
        current: list[int] = []
        for index in buckets[bucket]:
            padded = (len(current) + 1) * lengths[index]  # sorted: this one is the longest
            if current and (
                len(current) >= limits.max_batch_size or padded > limits.max_batch_tokens
            ):
                passes.append(current)
                current = []
            current.append(index)
        passes.append(current)
    return passes
