"""Length bucketing and the worker's shared passes, without a model."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import numpy as np
import pytest

from vllm_mlx.embeddings.batcher import BatchLimits, bucket_of, plan_batches
from vllm_mlx.embeddings.loader import EmbeddingModel
from vllm_mlx.embeddings.worker import EmbeddingWorker


def test_buckets_are_powers_of_two() -> None:
    assert [bucket_of(n) for n in (1, 16, 17, 32, 33, 300)] == [16, 16, 32, 32, 64, 512]


def test_short_inputs_never_share_a_pass_with_long_ones() -> None:
    lengths = [5, 300, 7, 12, 40]
    assert plan_batches(lengths) == [[0, 2, 3], [4], [1]]


def test_every_index_once_within_limits() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 512, size=500)]
    limits = BatchLimits(max_batch_size=8, max_batch_tokens=2048)
    passes = plan_batches(lengths, limits)
    assert sorted(i for p in passes for i in p) == list(range(500))
    for indices in passes:
        width = max(lengths[i] for i in indices)
        assert len(indices) <= 8
        assert len(indices) == 1 or len(indices) * width <= 2048
        assert len({bucket_of(lengths[i]) for i in indices}) == 1


def test_an_input_over_the_token_budget_runs_alone() -> None:
    assert plan_batches([600, 600], BatchLimits(max_batch_tokens=512)) == [[0], [1]]


class _Stub:
    dimensions = 2


def _fake_pass(seen: list[list[list[int]]], gate: threading.Event) -> Any:
    def run(model: EmbeddingModel, batch: list[list[int]]) -> np.ndarray:
        gate.wait(5)
        seen.append(batch)
        return np.array([[len(ids), sum(ids)] for ids in batch], dtype=np.float32)

    return run


def test_concurrent_requests_share_passes_and_keep_their_order() -> None:
    seen: list[list[list[int]]] = []
    gate = threading.Event()
    stub = cast("EmbeddingModel", _Stub())
    worker = EmbeddingWorker(lambda: stub, run=_fake_pass(seen, gate))

    async def scenario() -> list[list[np.ndarray]]:
        first = asyncio.ensure_future(worker.embed([[1]]))  # holds the thread at the gate
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(worker.embed([[i] * i, [2, i]])) for i in range(2, 10)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    try:
        results = asyncio.run(scenario())
    finally:
        worker.stop()
    assert results[0][0].tolist() == [1, 1]
    for i, vectors in zip(range(2, 10), results[1:], strict=True):
        assert [v.tolist() for v in vectors] == [[i, i * i], [2, 2 + i]]
    assert worker.passes == len(seen) < 1 + 2 * 8  # the 8 waiting requests shared passes


def test_a_failed_load_reaches_every_request() -> None:
    def load() -> EmbeddingModel:
        raise RuntimeError("no weights")

    worker = EmbeddingWorker(load)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="no weights"):
            await worker.embed([[1]])
        with pytest.raises(RuntimeError, match="no weights"):
            await worker.model()

    try:
        asyncio.run(scenario())
    finally:
        worker.stop()
