"""The engine thread: admits requests, runs prefill and decode, emits events.

All MLX work happens on this one thread (MLX streams are thread-local and MLX
is not safe to drive from several threads). Other threads talk to it only
through :meth:`EngineCore.submit` and :meth:`EngineCore.abort`.

Decode is pipelined as in mlx-lm: the forward pass for token t+1 is queued with
``mx.async_eval`` before token t is read back and turned into text.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx

from vllm_mlx.backend.memory import memory_snapshot
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.runner import ModelRunner
from vllm_mlx.config import EngineConfig
from vllm_mlx.engine.sampling import RequestSampler, SampleOutput
from vllm_mlx.engine.scheduler import Scheduler
from vllm_mlx.engine.sequence import (
    EventSink,
    Phase,
    SampledToken,
    SequenceState,
    TextDecoder,
)
from vllm_mlx.engine.types import (
    EngineError,
    EngineStats,
    ErrorKind,
    FinishReason,
    GenerationRequest,
    RequestStatus,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Submit:
    request: GenerationRequest
    sink: EventSink


@dataclass(frozen=True)
class _Abort:
    request_id: str


_Command = _Submit | _Abort | None  # None stops the thread


class EngineCore:
    """Owns the model and the step loop; runs on its own thread."""

    def __init__(self, load: Callable[[], LoadedModel], config: EngineConfig) -> None:
        self._load = load
        self._config = config
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._scheduler: Scheduler[SequenceState] = Scheduler(max_running=1)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="vllm-mlx-engine", daemon=True)
        self.loaded: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self._stats_lock = threading.Lock()
        self._stats = EngineStats()
        self._steps = 0
        self._done_requests = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0

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

    def submit(self, request: GenerationRequest, sink: EventSink) -> None:
        self._inbox.put(_Submit(request, sink))

    def abort(self, request_id: str) -> None:
        self._inbox.put(_Abort(request_id))

    def stop(self, timeout: float = 10.0) -> None:
        self._inbox.put(None)
        self._thread.join(timeout)

    def stats(self) -> EngineStats:
        with self._stats_lock:
            return self._stats

    # -- engine thread -------------------------------------------------------

    def _main(self) -> None:
        try:
            self.loaded = self._load()
            self._runner = ModelRunner(self.loaded)
            tok = self.loaded.tokenizer
            self._decoder = TextDecoder(tok.decode, tok.eos_token_ids)
        except BaseException as exc:  # reported to the starting thread
            self.load_error = exc
            self._ready.set()
            return
        self._ready.set()
        while self._drain_inbox(block=not self._scheduler.has_work):
            self._expire_deadlines()
            self._scheduler.admit()
            if self._scheduler.running:
                self._step(self._scheduler.running[0])
            self._publish_stats()

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
        if n_prompt >= self._context_length or not n_prompt:
            msg = f"prompt has {n_prompt} tokens; the context holds {self._context_length}"
            cmd.sink(EngineError(ErrorKind.INVALID_REQUEST, msg))
            return
        extra = [factory() for factory in req.logits_processors]
        sampler = RequestSampler(req.sampling, req.prompt_token_ids, self._runner.vocab_size, extra)
        seq = SequenceState(
            req,
            cmd.sink,
            sampler,
            self._decoder,
            self._config.stream_interval,
            self._context_length,
        )
        self._scheduler.add(seq)

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

    def _step(self, seq: SequenceState) -> None:
        self._steps += 1
        try:
            if seq.phase is not Phase.GENERATION:
                self._prefill_step(seq)
            else:
                self._decode_step(seq)
        except Exception as exc:  # edge of the engine: fail this request, keep serving
            log.exception("request %s failed in the engine", seq.request_id)
            self._scheduler.remove(seq.request_id)
            seq.finished = True
            seq.sink(EngineError(ErrorKind.INTERNAL, f"engine failure: {exc}"))
            self._retire(seq)
            return
        if seq.finished:
            self._scheduler.remove(seq.request_id)
            self._retire(seq)

    def _prefill_step(self, seq: SequenceState) -> None:
        """Feed one chunk of the prompt; the last token's logits start decoding."""
        if seq.cache is None:
            seq.cache = self._runner.new_cache()
            seq.phase = Phase.PREFILL
        prompt = seq.prompt
        body_end = len(prompt) - 1
        if seq.prefilled < body_end:
            end = min(body_end, seq.prefilled + self._config.prefill_chunk_tokens)
            self._runner.prefill(prompt[seq.prefilled : end], seq.cache)
            seq.prefilled = end
            if seq.prefilled < body_end:
                return
        last = mx.array([[prompt[-1]]], dtype=mx.int32)
        seq.pending = self._sample(seq, self._runner.logits(last, seq.cache))
        seq.prefilled = len(prompt)
        seq.phase = Phase.GENERATION

    def _decode_step(self, seq: SequenceState) -> None:
        current = seq.pending
        assert current is not None
        logits = self._runner.logits(current.token[None], seq.cache)
        if seq.sampler.needs_history:
            # Processors read the Python history, so the pipeline waits for this token.
            seq.append(_read_back(current))
            seq.pending = None if seq.finished else self._sample(seq, logits)
            return
        nxt = self._sample(seq, logits)
        seq.append(_read_back(current))
        seq.pending = None if seq.finished else nxt

    def _sample(self, seq: SequenceState, logits: mx.array) -> SampleOutput:
        out = seq.sampler.sample(logits, seq.output_ids)
        mx.async_eval(out.arrays())
        return out

    def _retire(self, seq: SequenceState) -> None:
        status = _status(seq)
        log.info(
            "request %s %s: %d prompt + %d completion tokens, ttft %s, %s tok/s",
            seq.request_id,
            seq.finish_reason.value if seq.finish_reason else "failed",
            len(seq.prompt),
            len(seq.output_ids),
            f"{status.ttft_s:.3f}s" if status.ttft_s is not None else "-",
            f"{status.tokens_per_second:.1f}" if status.tokens_per_second else "-",
        )
        seq.cache = None
        seq.pending = None
        self._done_requests += 1
        self._prompt_tokens += len(seq.prompt)
        self._completion_tokens += len(seq.output_ids)

    def _shutdown(self) -> None:
        for seq in list(self._scheduler.all()):
            self._finish(seq.request_id, FinishReason.ABORT)

    def _publish_stats(self) -> None:
        requests = tuple(_status(seq) for seq in self._scheduler.all())
        mem = memory_snapshot()
        stats = EngineStats(
            steps_executed=self._steps,
            num_running=len(self._scheduler.running),
            num_waiting=len(self._scheduler.waiting),
            total_requests_processed=self._done_requests,
            total_prompt_tokens=self._prompt_tokens,
            total_completion_tokens=self._completion_tokens,
            active_memory_bytes=mem.active_bytes,
            peak_memory_bytes=mem.peak_bytes,
            cache_memory_bytes=mem.cache_bytes,
            requests=requests,
        )
        with self._stats_lock:
            self._stats = stats


def _read_back(out: SampleOutput) -> SampledToken:
    token = int(out.token.item())
    if out.logprob is None:
        return SampledToken(token)
    top: tuple[tuple[int, float], ...] = ()
    if out.top_ids is not None and out.top_logprobs is not None:
        top = tuple(zip(out.top_ids[0].tolist(), out.top_logprobs[0].tolist(), strict=True))
    return SampledToken(token, float(out.logprob.item()), top)


def _status(seq: SequenceState) -> RequestStatus:
    now = time.monotonic()
    ttft = tps = None
    if seq.first_token_time is not None:
        ttft = seq.first_token_time - seq.arrival_time
        elapsed = now - seq.first_token_time
        tps = len(seq.output_ids) / elapsed if elapsed > 0 else None
    return RequestStatus(
        request_id=seq.request_id,
        phase=seq.phase.value,
        generated_tokens=len(seq.output_ids),
        max_tokens=seq.request.sampling.max_tokens,
        cached_tokens=seq.cached_tokens,
        ttft_s=ttft,
        tokens_per_second=tps,
    )
