"""The engine thread: schedules, runs prefill and batched decode, emits events.

All MLX work happens on this one thread (MLX streams are thread-local and MLX
is not safe to drive from several threads). Other threads talk to it only
through :meth:`EngineCore.submit` and :meth:`EngineCore.abort`.

One step = the scheduler's plan: copy-on-write block copies, prefill chunks
(one forward each), then one decode forward for every generating sequence with
each row sampled by its own request's sampler.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import mlx.core as mx

from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.runner import ModelRunner, PrefillSpan
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.backend.vision import PromptMedia, VisionInputError
from vllm_mlx.config import EngineConfig
from vllm_mlx.engine.kv.manager import KVCacheManager
from vllm_mlx.engine.kv_sizing import build_cache_manager
from vllm_mlx.engine.runtime import RuntimeModeController
from vllm_mlx.engine.sampling import RequestSampler, SampleOutput, sample_rows
from vllm_mlx.engine.scheduler import Scheduler, StepPlan
from vllm_mlx.engine.sequence import EventSink, SampledToken, SequenceState, TextDecoder
from vllm_mlx.engine.stats import EngineCounters, request_record, request_status
from vllm_mlx.engine.step_cost import ChunkShape, StepCostModel
from vllm_mlx.engine.types import (
    EngineError,
    EngineEvent,
    EngineStats,
    ErrorKind,
    FinishReason,
    GenerationRequest,
    RequestObserver,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Submit:
    request: GenerationRequest
    sink: EventSink


@dataclass(frozen=True)
class _PassTiming:
    """A decode pass in flight: when it was launched, over how many rows and tokens."""

    launched: float
    rows: int
    context: int


@dataclass(frozen=True)
class _Abort:
    request_id: str


@dataclass(frozen=True)
class _FailAll:
    message: str


_Command = _Submit | _Abort | _FailAll | None  # None stops the thread


class EngineCore:
    """Owns the model, the KV cache and the step loop; runs on its own thread."""

    def __init__(
        self,
        load: Callable[[], LoadedModel],
        config: EngineConfig,
        observer: RequestObserver | None = None,
    ) -> None:
        """``observer`` gets a :class:`RequestRecord` per retired sequence, on this thread."""
        self._load = load
        self._config = config
        self._observer = observer
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="vllm-mlx-engine", daemon=True)
        self.loaded: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self.crashed: BaseException | None = None  # set if the step loop died
        self._counters = EngineCounters()
        # Events of a step are delivered after its stats are published, so a client
        # that sees its request finish never reads a /v1/status from before that.
        self._outbox: list[tuple[EventSink, EngineEvent]] = []
        self._cost = StepCostModel()
        self._last_pass: _PassTiming | None = None  # the decode pass in flight, untimed

    # -- public, thread-safe -------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> LoadedModel:
        """Block until the model is loaded; re-raise a load failure."""
        self._ready.wait(timeout)
        if self.load_error is not None:
            raise self.load_error
        if self.loaded is None:
            raise TimeoutError("model did not load in time")
        return self.loaded

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.crashed is None

    def submit(self, request: GenerationRequest, sink: EventSink) -> None:
        if not self.alive:
            sink(EngineError(ErrorKind.INTERNAL, "the engine is not running"))
            return
        if not request.arrival_time:  # now, not when a busy step lets the thread accept it
            request = replace(request, arrival_time=time.monotonic())
        self._inbox.put(_Submit(request, sink))

    def abort(self, request_id: str) -> None:
        self._inbox.put(_Abort(request_id))

    def fail_all(self, message: str) -> None:
        """End every queued and running request with an OVERLOADED error (shutdown)."""
        self._inbox.put(_FailAll(message))

    def stop(self, timeout: float = 10.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout)

    def stats(self) -> EngineStats:
        return self._counters.latest()

    # -- engine thread: set-up and loop ----------------------------------------

    def _main(self) -> None:
        try:
            self._setup()
        except BaseException as exc:  # reported to the starting thread
            self.load_error = exc
            self._ready.set()
            return
        self._scheduler.max_running = self._runtime.max_running(0)
        self._publish_stats()  # /v1/status describes the pool from its first answer
        self._ready.set()
        try:
            while self._drain_inbox(block=not self._scheduler.has_work):
                self._expire_deadlines()
                self._scheduler.max_running = self._runtime.max_running(self._in_flight)
                if self._scheduler.has_work:
                    self._step()
                self._publish_stats(throttle=True)
                self._deliver()
        except Exception as exc:  # the last line of defence: say so, fail everyone, stop
            log.exception("engine thread crashed")
            self.crashed = exc
            for seq in list(self._scheduler.all()):
                seq.finished = True
                seq.sink(EngineError(ErrorKind.INTERNAL, f"engine crashed: {exc}"))
            self._deliver()

    def _setup(self) -> None:
        self.loaded = self._load()
        cache_cfg = self._config.cache
        self._runner = ModelRunner(self.loaded, cache_cfg.block_size)
        self._kv: KVCacheManager = build_cache_manager(cache_cfg, self._runner.bytes_per_token())
        # The dense decode slots copy running sequences' KV: at most the pool's size again.
        self._runner.limit_decode_slots(self._kv.pool.num_blocks * cache_cfg.block_size)
        step_ms = self._config.max_step_ms
        self._scheduler: Scheduler[SequenceState] = Scheduler(
            self._kv,
            max_running=1,
            token_budget=self._config.prefill_chunk_tokens,
            cost=self._cost,
            max_step_s=step_ms / 1000 if step_ms is not None else None,
        )
        self._runtime = RuntimeModeController(self._config)
        tok = Tokenizer(self.loaded.tokenizer, self.loaded.eos_token_ids)
        self._decoder = TextDecoder(tok.decode, self.loaded.eos_token_ids)
        log.info(
            "KV cache: %d blocks of %d tokens (%s strategy)",
            self._kv.pool.num_blocks,
            cache_cfg.block_size,
            cache_cfg.strategy.value,
        )

    @property
    def _in_flight(self) -> int:
        return len(self._scheduler.running) + len(self._scheduler.waiting)

    def _drain_inbox(self, block: bool) -> bool:
        """Apply queued commands; False once asked to stop."""
        try:
            cmd = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if cmd is None:
                self._shutdown()
                return False
            if isinstance(cmd, _Submit):
                self._accept_safely(cmd)
            elif isinstance(cmd, _FailAll):
                self._settle()  # nothing left in flight for the sequences about to go
                for seq in list(self._scheduler.all()):
                    self._scheduler.remove(seq.request_id)
                    self._fail(seq, ErrorKind.OVERLOADED, cmd.message)
            else:
                self._finish(cmd.request_id, FinishReason.ABORT)
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _accept_safely(self, cmd: _Submit) -> None:
        try:
            self._accept(cmd)
        except Exception as exc:  # a bad processor factory must not kill the thread
            log.exception("request %s could not be set up", cmd.request.request_id)
            cmd.sink(EngineError(ErrorKind.INTERNAL, f"request setup failed: {exc}"))

    def _accept(self, cmd: _Submit) -> None:
        req = cmd.request
        n_prompt = len(req.prompt_token_ids)
        limit = self._context_length
        if not n_prompt or n_prompt >= limit:
            msg = f"prompt has {n_prompt} tokens; the context holds {limit}"
            cmd.sink(EngineError(ErrorKind.INVALID_REQUEST, msg))
            return
        media = self._prepare_media(req, cmd.sink)
        if req.images and media is None:
            return
        extra = [factory() for factory in req.logits_processors]
        sampler = RequestSampler(req.sampling, req.prompt_token_ids, self._runner.vocab_size, extra)
        sink = cmd.sink
        seq = SequenceState(
            req,
            lambda event: self._outbox.append((sink, event)),
            sampler,
            self._decoder,
            self._config.stream_interval,
            limit,
        )
        if media is not None:
            seq.attach_media(media)
        seq.running_at_admission = len(self._scheduler.running)
        seq.waiting_at_admission = len(self._scheduler.waiting)
        self._scheduler.add(seq)
        self._counters.refresh_soon()  # a new request shows in /v1/status after this step

    def _prepare_media(self, req: GenerationRequest, sink: EventSink) -> PromptMedia | None:
        """The images' features (through the vision cache), or None after an error event."""
        if not req.images:
            return None
        vision = self._runner.vision
        if vision is None:
            sink(EngineError(ErrorKind.INVALID_REQUEST, "the loaded model does not take images"))
            return None
        try:
            return vision.prepare(req.prompt_token_ids, req.images)
        except VisionInputError as exc:
            sink(EngineError(ErrorKind.INVALID_REQUEST, str(exc)))
            return None

    @property
    def _context_length(self) -> int:
        assert self.loaded is not None
        return self.loaded.context_length

    def _finish(self, request_id: str, reason: FinishReason) -> None:
        seq = self._scheduler.remove(request_id)
        if seq is not None:
            seq.finish(reason)
            self._retire(seq)

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        for seq in list(self._scheduler.all()):
            deadline = seq.request.deadline
            if deadline is not None and now >= deadline:
                log.warning("request %s timed out", seq.request_id)
                self._finish(seq.request_id, FinishReason.TIMEOUT)

    # -- engine thread: one step -----------------------------------------------

    def _step(self) -> None:
        self._counters.steps += 1
        try:
            plan = self._scheduler.schedule()
        except Exception:  # a scheduling bug must not kill the engine thread
            log.exception("scheduling failed; failing the running requests")
            for seq in list(self._scheduler.running):
                self._scheduler.remove(seq.request_id)
                self._fail(seq, ErrorKind.INTERNAL, "engine scheduling failure")
            return
        for seq in plan.overflowed:
            self._fail(seq, ErrorKind.INVALID_REQUEST, "the request does not fit in the KV cache")
        self._counters.preemptions += len(plan.preempted)
        for seq in plan.preempted:
            seq.preempted = True
            log.info("preempted %s (KV cache full); it will be recomputed", seq.request_id)
        start = time.perf_counter()
        try:
            self._execute(plan)
        except Exception as exc:  # edge of the engine: fail the step's requests, keep serving
            log.exception("engine step failed")
            rows = [c.seq for c in plan.prefills] + plan.decodes
            for seq in dict.fromkeys(rows):
                self._scheduler.remove(seq.request_id)
                self._fail(seq, ErrorKind.INTERNAL, f"engine failure: {exc}")
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "step %d: %d prefill chunks (%d tokens), %d decode rows, %d waiting, %.1f ms",
                self._counters.steps,
                len(plan.prefills),
                sum(c.length for c in plan.prefills),
                len(plan.decodes),
                len(self._scheduler.waiting),
                (time.perf_counter() - start) * 1e3,
            )

    def _execute(self, plan: StepPlan[SequenceState]) -> None:
        grows = self._kv.pool.high_water > self._runner.storage.capacity_blocks
        history = any(seq.sampler.needs_history for seq in plan.decodes)
        if plan.prefills or plan.copies or plan.preempted or grows or history:
            self._settle()  # these write the pools or read Python history: no pass in flight
        self._runner.ensure_blocks(self._kv.pool.high_water)
        for copy in plan.copies:
            self._runner.copy_block(copy.src, copy.dst, copy.num_tokens)
        spans = []
        for chunk in plan.prefills:
            table = chunk.seq.table
            assert table is not None
            tokens = chunk.seq.tokens[chunk.start : chunk.start + chunk.length]
            spans.append(PrefillSpan(tokens, table.block_ids, chunk.start, chunk.seq.media))
        if spans:
            start = time.perf_counter()
            self._runner.prefill_batch(spans)
            shapes = [ChunkShape(c.start, c.length) for c in plan.prefills]
            self._cost.observe_prefill(shapes, time.perf_counter() - start)
        for chunk in plan.prefills:
            seq, end = chunk.seq, chunk.start + chunk.length
            assert seq.table is not None
            seq.num_computed = end
            self._kv.commit(seq.table, seq.cache_keys[:end], len(seq.prompt))
        if plan.decodes:
            self._decode(plan.decodes)

    def _decode(self, rows: list[SequenceState]) -> None:
        """Build this step on the previous step's lazy samples, then read those back.

        The pipeline as in mlx-lm: graph building overlaps the previous pass. A row
        that turns out finished still runs this pass; its result is dropped.
        """
        live = [(seq, seq.table) for seq in rows if seq.table is not None]  # _settle may end some
        if not live:
            return
        rows = [seq for seq, _ in live]
        tables = [table.block_ids for _, table in live]
        positions = [table.num_tokens - 1 for _, table in live]
        feed = [
            seq.pending.token if seq.pending else mx.array([seq.tokens[-1]], dtype=mx.int32)
            for seq in rows
        ]
        keys = [seq.request_id for seq in rows]
        deltas = None  # text models: no M-RoPE deltas to carry
        if self._runner.vision is not None:
            deltas = [seq.media.rope_delta if seq.media is not None else 0 for seq in rows]
        logits = self._runner.decode(mx.concatenate(feed), tables, positions, keys, deltas)
        outs = sample_rows([seq.sampler for seq in rows], logits, [seq.output_ids for seq in rows])
        for seq in rows:
            if seq.pending is not None:
                self._absorb(seq)
        mx.async_eval([a for out in outs for a in out.arrays()], self._runner.storage.state())
        context = sum(len(seq.tokens) for seq in rows)
        self._last_pass = _PassTiming(time.perf_counter(), len(rows), context)
        for seq, out in zip(rows, outs, strict=True):
            if not seq.finished:
                seq.pending = out

    def _settle(self) -> None:
        """Wait for the pass in flight and take in every token it sampled."""
        for seq in list(self._scheduler.all()):
            if seq.pending is not None:
                self._absorb(seq)

    def _absorb(self, seq: SequenceState) -> None:
        """Read back a sampled token; every token before it has been fed by now."""
        out, seq.pending = seq.pending, None
        assert out is not None
        if seq.table is not None:  # a preempted sequence recomputes instead
            seq.num_computed = len(seq.tokens)
            self._kv.commit(seq.table, seq.cache_keys, len(seq.prompt))
        token = _read_back(out)  # waits for the pass in flight
        if self._last_pass is not None:  # the first read-back times the pass for the scheduler
            last, self._last_pass = self._last_pass, None
            self._cost.observe_decode(last.rows, last.context, time.perf_counter() - last.launched)
        seq.append(token)
        if len(seq.output_ids) == 1:
            self._counters.refresh_soon()  # a streamed first token is in /v1/status first
        if seq.finished:
            self._scheduler.remove(seq.request_id)
            self._retire(seq)

    def _fail(self, seq: SequenceState, kind: ErrorKind, message: str) -> None:
        seq.finished = True
        seq.sink(EngineError(kind, message))
        self._retire(seq)

    def _retire(self, seq: SequenceState) -> None:
        status = request_status(seq)
        log.info(
            "request %s %s: %d prompt (%d cached, %s) + %d completion tokens, ttft %s, %s tok/s",
            seq.request_id,
            seq.finish_reason.value if seq.finish_reason else "failed",
            len(seq.prompt),
            seq.cached_tokens,
            seq.hit_type,
            len(seq.output_ids),
            f"{status.ttft_s:.3f}s" if status.ttft_s is not None else "-",
            f"{status.tokens_per_second:.1f}" if status.tokens_per_second else "-",
        )
        if seq.loop_trigger is not None:
            mode = seq.request.repetition_policy.value
            log.info(
                "request %s: loop stopped (%s, %s mode)", seq.request_id, seq.loop_trigger, mode
            )
        self._counters.retire(seq)  # published at the end of this step, throttle or not
        if self._observer is not None:
            try:
                self._observer(request_record(seq))
            except Exception:  # foreign code on the engine thread: log it, keep serving
                log.exception("the request observer failed on %s", seq.request_id)

    def _shutdown(self) -> None:
        for seq in list(self._scheduler.all()):
            self._finish(seq.request_id, FinishReason.ABORT)
        self._deliver()

    def _deliver(self) -> None:
        outbox, self._outbox = self._outbox, []
        for sink, event in outbox:
            sink(event)

    def _publish_stats(self, throttle: bool = False) -> None:
        """Snapshot the counters for other threads; throttled while busy (it is per step)."""
        if throttle and not self._counters.due(busy=self._scheduler.has_work):
            return
        self._counters.publish(
            self._scheduler,
            self._kv,
            self._runner.storage.nbytes(),
            self._runtime.mode_name(self._scheduler.max_running),
            self._config.cache.strategy.value,
            self._runner.vision.cache_stats() if self._runner.vision is not None else None,
        )


def _read_back(out: SampleOutput) -> SampledToken:
    token = int(out.token.item())  # type: ignore[arg-type]
    if out.logprob is None:
        return SampledToken(token)
    top: tuple[tuple[int, float], ...] = ()
    if out.top_ids is not None and out.top_logprobs is not None:
        ids: list[int] = out.top_ids[0].tolist()  # type: ignore[assignment]
        logprobs: list[float] = out.top_logprobs[0].tolist()  # type: ignore[assignment]
        top = tuple(zip(ids, logprobs, strict=True))
    return SampledToken(token, float(out.logprob.item()), top)  # type: ignore[arg-type]
