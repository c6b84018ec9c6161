"""Per-request state on the engine thread, and the turning of tokens into events."""

from __future__ import annotations

import itertools
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vllm_mlx.engine.detokenize import IncrementalDetokenizer
from vllm_mlx.engine.kv.image_keys import cache_keys
from vllm_mlx.engine.kv.manager import BlockTable, PrefixMatch
from vllm_mlx.engine.repetition import detector_for
from vllm_mlx.engine.sampling import RequestSampler, SampleOutput
from vllm_mlx.engine.scheduler import Phase
from vllm_mlx.engine.stop import StopStringMatcher
from vllm_mlx.engine.types import (
    REPETITION_DETECTED,
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    SequenceFacts,
    TokenDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

if TYPE_CHECKING:
    from vllm_mlx.backend.vision import PromptMedia

EventSink = Callable[[EngineEvent], None]

RECENT_TOKENS = 16  # inter-token latencies /v1/status reports per request


@dataclass(frozen=True)
class SampledToken:
    """A sampled token read back to Python."""

    token_id: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


Decode = Callable[[Sequence[int], bool], str]  # (ids, skip_special_tokens) -> text


class TextDecoder:
    """What the engine needs from a tokenizer to produce text."""

    def __init__(self, decode: Decode, eos_token_ids: frozenset[int]):
        self.decode = decode
        self.eos_token_ids = eos_token_ids


class SequenceState:
    """One sequence from admission to its final event."""

    def __init__(
        self,
        request: GenerationRequest,
        sink: EventSink,
        sampler: RequestSampler,
        decoder: TextDecoder,
        stream_interval: int,
        context_length: int,
    ) -> None:
        self.request = request
        self.sink = sink
        self.sampler = sampler
        self.phase = Phase.QUEUED
        self.table: BlockTable | None = None  # KV blocks, owned by the scheduler
        self.match: PrefixMatch | None = None  # prefix-cache hit of the latest admission (kept)
        self.num_computed = 0  # tokens whose KV is in the cache
        self.tokens: list[int] = list(request.prompt_token_ids)  # prompt, then output
        # What the prefix cache hashes: the tokens, with image tokens keyed by their
        # image (engine.kv.image_keys); the very same list for a text-only prompt.
        self.cache_keys: list[int] = self.tokens
        self.media: PromptMedia | None = None  # a vision prompt's features, set at admission
        self.output_ids: list[int] = []
        self.pending: SampleOutput | None = None  # sampled on the device, not read back yet
        self.finished = False
        self.finish_reason: FinishReason | None = None
        self.loop_trigger: str | None = None  # set when the repetition detector stopped it
        self.preempted = False  # requeued at least once to recompute
        self.running_at_admission = 0  # the scheduler's queues when the engine accepted it
        self.waiting_at_admission = 0
        self._decoder = decoder
        skip = request.skip_special_tokens
        self._decode = lambda ids: decoder.decode(ids, skip)
        self._detok = IncrementalDetokenizer(self._decode, request.prompt_token_ids)
        self._stops = StopStringMatcher(request.sampling.stop)
        self._loops = detector_for(request.repetition_policy)
        self._stream_interval = max(1, stream_interval)
        self._context_length = context_length
        self._buf_text: list[str] = []
        self._buf_ids: list[int] = []
        self._buf_logprobs: list[TokenLogprob] = []
        self.first_token_time: float | None = None
        self.token_times = array("d")  # time.monotonic() of every output token, 8 bytes each
        self.arrival_time = request.arrival_time or time.monotonic()

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def attach_media(self, media: PromptMedia) -> None:
        """The prompt's images: merged at prefill, and keyed into the prefix cache."""
        self.media = media
        self.cache_keys = cache_keys(self.tokens, media.positions, media.spans)

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.request.prompt_token_ids

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache at admission."""
        return min(self.match.num_tokens, len(self.prompt)) if self.match else 0

    @property
    def recent_itls(self) -> list[float]:
        """Seconds between each of the latest tokens and the one before it."""
        recent = self.token_times[-(RECENT_TOKENS + 1) :]
        return [b - a for a, b in itertools.pairwise(recent)]

    @property
    def itls(self) -> tuple[float, ...]:
        """Seconds between each output token and the one before it, all of them."""
        return tuple(b - a for a, b in itertools.pairwise(self.token_times))

    @property
    def hit_type(self) -> str:
        return self.match.hit_type.value if self.match else "miss"

    def append(self, sampled: SampledToken) -> None:
        """Record one generated token; emit a delta or the final event."""
        now = time.monotonic()
        if self.first_token_time is None:
            self.first_token_time = now
        self.token_times.append(now)
        params = self.request.sampling
        tid = sampled.token_id
        self.output_ids.append(tid)
        self.tokens.append(tid)
        if self.cache_keys is not self.tokens:
            self.cache_keys.append(tid)
        if not params.ignore_eos and (
            tid in self._decoder.eos_token_ids or tid in params.stop_token_ids
        ):
            self.finish(FinishReason.STOP)
            return
        self._buf_ids.append(tid)
        if sampled.logprob is not None:
            self._buf_logprobs.append(self._logprob(sampled))
        result = self._stops.feed(self._detok.add(tid))
        self._buf_text.append(result.text)
        loop = self._loops.feed(tid) if self._loops is not None else None
        if result.stop is not None:
            self.finish(FinishReason.STOP, stop_sequence=result.stop)
        elif loop is not None:
            self.loop_trigger = loop
            self.finish(FinishReason.STOP)
        elif (
            len(self.output_ids) >= params.max_tokens
            or len(self.prompt) + len(self.output_ids) >= self._context_length
        ):
            self.finish(FinishReason.LENGTH)
        elif len(self._buf_ids) >= self._stream_interval:
            self._flush_delta()

    def finish(self, reason: FinishReason, stop_sequence: str | None = None) -> None:
        """Send the final event with whatever text is still buffered."""
        if self.finished:
            return
        self.finished = True
        self.finish_reason = reason
        if stop_sequence is None and reason is not FinishReason.ABORT:
            self._buf_text.append(self._stops.feed(self._detok.flush()).text)
            self._buf_text.append(self._stops.flush())
        self._flush_delta()
        usage = Usage(len(self.prompt), len(self.output_ids), self.cached_tokens)
        because = REPETITION_DETECTED if self.loop_trigger is not None else None
        facts = SequenceFacts(
            self.hit_type, self.preempted, self.running_at_admission, self.waiting_at_admission
        )
        self.sink(Finished(reason, usage, stop_sequence, because, self.loop_trigger, facts))

    def _flush_delta(self) -> None:
        text = "".join(self._buf_text)
        if text or self._buf_ids or self._buf_logprobs:
            self.sink(TokenDelta(text, tuple(self._buf_ids), tuple(self._buf_logprobs)))
        self._buf_text.clear()
        self._buf_ids.clear()
        self._buf_logprobs.clear()

    def _logprob(self, sampled: SampledToken) -> TokenLogprob:
        decode = self._decode
        top = tuple(TopLogprob(t, decode([t]), lp) for t, lp in sampled.top)
        logprob = sampled.logprob if sampled.logprob is not None else 0.0
        return TokenLogprob(sampled.token_id, decode([sampled.token_id]), logprob, top)
