"""Engine counters, and the snapshot other threads read (/v1/status, /metrics).

The engine thread counts steps, preemptions and retired sequences into an
:class:`EngineCounters`, which publishes an immutable :class:`EngineStats` under a
lock. Publishing is throttled while requests run: it is per step, and reads memory.
"""

from __future__ import annotations

import threading
import time

from vllm_mlx.backend.memory import memory_snapshot
from vllm_mlx.engine.kv.manager import KVCacheManager
from vllm_mlx.engine.repetition import INTERVENING_MODES
from vllm_mlx.engine.scheduler import Phase, Scheduler
from vllm_mlx.engine.sequence import SequenceState
from vllm_mlx.engine.types import (
    CacheStats,
    EngineStats,
    RequestRecord,
    RequestStatus,
    VisionCacheStats,
)

STATS_PERIOD_S = 0.1  # how stale /v1/status may be while requests run


class EngineCounters:
    """Cumulative counters kept on the engine thread; :meth:`latest` is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest = EngineStats()
        self.steps = 0
        self.preemptions = 0  # sequences requeued to recompute because the KV pool was full
        self._done_requests = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._interventions = dict.fromkeys(INTERVENING_MODES, 0)  # loops stopped, by mode
        self._published_at = 0.0

    def latest(self) -> EngineStats:
        with self._lock:
            return self._latest

    def refresh_soon(self) -> None:
        """Publish at the end of this step, throttled or not (a request came or went)."""
        self._published_at = 0.0

    def retire(self, seq: SequenceState) -> None:
        """Count a sequence that left the engine, finished or failed."""
        self._done_requests += 1
        self._prompt_tokens += len(seq.prompt)
        self._completion_tokens += len(seq.output_ids)
        if seq.loop_trigger is not None:
            mode = seq.request.repetition_policy.value
            self._interventions[mode] = self._interventions.get(mode, 0) + 1
        self.refresh_soon()

    def due(self, busy: bool) -> bool:
        """Whether a throttled publish should run now."""
        return not busy or time.monotonic() - self._published_at >= STATS_PERIOD_S

    def publish(
        self,
        scheduler: Scheduler[SequenceState],
        kv: KVCacheManager,
        storage_bytes: int,
        mode: str,
        strategy: str,
        vision_cache: VisionCacheStats | None = None,
    ) -> None:
        """Snapshot the counters, the scheduler's queues, the KV pool and MLX memory."""
        self._published_at = time.monotonic()
        mem = memory_snapshot()
        pool = kv.pool
        stats = EngineStats(
            steps_executed=self.steps,
            num_running=len(scheduler.running),
            num_waiting=len(scheduler.waiting),
            total_requests_processed=self._done_requests,
            total_prompt_tokens=self._prompt_tokens,
            total_completion_tokens=self._completion_tokens,
            num_preemptions=self.preemptions,
            active_memory_bytes=mem.active_bytes,
            peak_memory_bytes=mem.peak_bytes,
            cache_memory_bytes=mem.cache_bytes,
            mode=mode,
            repetition_interventions=dict(self._interventions),
            cache=CacheStats(
                strategy=strategy,
                block_size=kv.block_size,
                blocks_total=pool.num_blocks,
                blocks_free=pool.num_free,
                blocks_used=pool.num_used,
                blocks_cached=pool.num_cached,
                hit_rate=kv.hit_rate,
                query_tokens=kv.query_tokens,
                hit_tokens=kv.hit_tokens,
                storage_bytes=storage_bytes,
            ),
            vision_cache=vision_cache,
            requests=tuple(request_status(seq) for seq in scheduler.all()),
        )
        with self._lock:
            self._latest = stats


def request_record(seq: SequenceState) -> RequestRecord:
    """A retiring sequence's life, for the engine's observer."""
    return RequestRecord(
        request_id=seq.request_id,
        finish_reason=seq.finish_reason,
        prompt_tokens=len(seq.prompt),
        completion_tokens=len(seq.output_ids),
        cached_tokens=seq.cached_tokens,
        arrival_time=seq.arrival_time,
        first_token_time=seq.first_token_time,
        finish_time=time.monotonic(),
        itls=seq.itls,
    )


def request_status(seq: SequenceState) -> RequestStatus:
    """A sequence's progress now: phase, tokens, time to first token and speed."""
    now = time.monotonic()
    ttft = tps = None
    if seq.first_token_time is not None:
        ttft = seq.first_token_time - seq.arrival_time
        elapsed = now - seq.first_token_time
        tps = len(seq.output_ids) / elapsed if elapsed > 0 else None
    itls = seq.recent_itls
    return RequestStatus(
        request_id=seq.request_id,
        phase=seq.phase.value if not seq.finished else Phase.GENERATION.value,
        generated_tokens=len(seq.output_ids),
        max_tokens=seq.request.sampling.max_tokens,
        cached_tokens=seq.cached_tokens,
        cache_hit_type=seq.hit_type,
        ttft_s=ttft,
        tokens_per_second=tps,
        prompt_tokens=len(seq.prompt),
        computed_tokens=seq.num_computed,
        recent_itl_s=sum(itls) / len(itls) if itls else None,
        recent_itl_max_s=max(itls) if itls else None,
    )
