"""The embedding worker: one thread that owns every MLX call of the encoder.

Routes await :meth:`EmbeddingWorker.embed`; the thread takes everything queued since
its last pass, plans passes by length bucket (``batcher.py``), runs them on its own
MLX stream and hands back float32 numpy vectors. Concurrent requests so share
forward passes, and chat decoding, on the engine thread, never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np

from vllm_mlx.embeddings.batcher import BatchLimits, plan_batches
from vllm_mlx.embeddings.loader import EmbeddingModel

if TYPE_CHECKING:
    import mlx.core as mx

log = logging.getLogger(__name__)

Loader = Callable[[], EmbeddingModel]
PassRunner = Callable[[EmbeddingModel, list[list[int]]], np.ndarray]  # one forward pass
_STOP = object()


@dataclass
class _Job:
    """One request's inputs and the future its vectors go to (None: load only)."""

    inputs: list[list[int]] | None
    future: asyncio.Future[object]
    loop: asyncio.AbstractEventLoop
    vectors: list[np.ndarray] = field(default_factory=list)

    def resolve(self, result: object, error: BaseException | None = None) -> None:
        def deliver() -> None:
            if self.future.done():  # the client left; nobody waits
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(deliver)


class EmbeddingWorker:
    """Loads the model on first need and embeds token lists in shared passes."""

    def __init__(
        self, load: Loader, limits: BatchLimits | None = None, run: PassRunner | None = None
    ) -> None:
        """``run`` replaces :func:`run_pass` (tests batch without a model)."""
        self._load = load
        self._run_pass = run or run_pass
        self._limits = limits or BatchLimits()
        self._jobs: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._model: EmbeddingModel | None = None
        self._error: BaseException | None = None  # a failed load, reported to every request
        self._lock = threading.Lock()
        self.passes = 0  # forward passes run (tests read it)

    @property
    def loaded(self) -> EmbeddingModel | None:
        return self._model

    async def model(self) -> EmbeddingModel:
        """The loaded model, loading it on the worker thread first if needed."""
        if self._model is not None:
            return self._model
        return cast("EmbeddingModel", await self._submit(None))

    async def embed(self, inputs: list[list[int]]) -> list[np.ndarray]:
        """One float32 vector per token list, pooled and normalized as the model asks."""
        return cast("list[np.ndarray]", await self._submit(inputs))

    async def _submit(self, inputs: list[list[int]] | None) -> object:
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        job = _Job(inputs, loop.create_future(), loop)
        self._jobs.put(job)
        return await job.future

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="embeddings", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Finish the pass in progress and end the thread (idempotent)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(_STOP)
            thread.join()

    def _run(self) -> None:
        import mlx.core as mx

        stream = mx.new_stream(mx.default_device())
        with mx.stream(stream):
            while True:
                jobs = self._take()
                if jobs is None:
                    return
                self._serve(jobs)

    def _take(self) -> list[_Job] | None:
        """Block for one job, then take every job queued behind it."""
        first = self._jobs.get()
        if first is _STOP:
            return None
        jobs = [first]
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return jobs  # type: ignore[return-value]
            if job is _STOP:
                self._jobs.put(job)  # serve these, then stop
                return jobs  # type: ignore[return-value]
            jobs.append(job)

    def _serve(self, jobs: list[_Job]) -> None:
        model = self._ensure_model()
        if model is None:
            for job in jobs:
                job.resolve(None, self._error)
            return
        work = [job for job in jobs if job.inputs is not None]
        for job in jobs:
            if job.inputs is None:
                job.resolve(model)
        try:
            self._embed_jobs(model, work)
        except Exception as exc:  # the edge of the thread: fail the requests, keep serving
            log.exception("embedding pass failed")
            for job in work:
                job.resolve(None, exc)
            return
        for job in work:
            job.resolve(job.vectors)

    def _ensure_model(self) -> EmbeddingModel | None:
        if self._model is None and self._error is None:
            try:
                self._model = self._load()
            except Exception as exc:  # reported to every request, logged once
                log.error("embedding model failed to load: %s", exc)
                self._error = exc
        return self._model

    def _embed_jobs(self, model: EmbeddingModel, jobs: list[_Job]) -> None:
        tokens = [ids for job in jobs for ids in job.inputs or ()]
        out = np.zeros((len(tokens), model.dimensions), dtype=np.float32)
        for indices in plan_batches([len(t) for t in tokens], self._limits):
            out[indices] = self._run_pass(model, [tokens[i] for i in indices])
            self.passes += 1
        start = 0
        for job in jobs:
            count = len(job.inputs or ())
            job.vectors = list(out[start : start + count])
            start += count


def run_pass(model: EmbeddingModel, batch: list[list[int]]) -> np.ndarray:
    """One forward pass over right-padded rows: ``(rows, dimensions)`` float32."""
    import mlx.core as mx

    from vllm_mlx.embeddings.pooling import l2_normalize, pool

    width = max(len(ids) for ids in batch)
    ids = np.zeros((len(batch), width), dtype=np.int32)
    mask = np.zeros((len(batch), width), dtype=np.int32)
    for row, tokens in enumerate(batch):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    ids_mx, mask_mx = mx.array(ids), mx.array(mask)
    hidden = model.encoder(ids_mx, mask_mx)
    vectors: mx.array = pool(hidden, mask_mx, model.pooling.mode)
    if model.pooling.normalize:
        vectors = l2_normalize(vectors)
    return np.array(vectors.astype(mx.float32))
