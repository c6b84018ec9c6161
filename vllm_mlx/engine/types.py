"""Boundary types between protocol adapters and the engine.

Adapters build one :class:`GenerationRequest`; the engine answers with a stream of
:data:`EngineEvent` values, ending with exactly one :class:`Finished` or
:class:`EngineError`. Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vllm_mlx.backend.media import ImageInput, VisionCacheStats
from vllm_mlx.config import RepetitionPolicy


class FinishReason(StrEnum):
    STOP = "stop"  # EOS token, stop token id or stop string
    LENGTH = "length"  # max_tokens or the context window reached
    ABORT = "abort"  # the caller went away
    TIMEOUT = "timeout"  # the request outlived its deadline


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding controls; every request gets its own sampler chain."""

    max_tokens: int  # completion tokens to generate at most
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus mass kept; 1 disables
    top_k: int = 0  # keep the k most likely tokens; 0 disables
    min_p: float = 0.0  # drop tokens below min_p * p(max); 0 disables
    repetition_penalty: float = 1.0  # multiplicative (HF style); 1 disables
    presence_penalty: float = 0.0  # OpenAI additive penalty for any seen token
    frequency_penalty: float = 0.0  # OpenAI additive penalty per occurrence
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs
    seed: int | None = None  # makes sampling reproducible for this request
    stop: tuple[str, ...] = ()  # strings that end generation and are not emitted
    stop_token_ids: tuple[int, ...] = ()  # extra token ids that end generation
    ignore_eos: bool = False  # keep generating through EOS (benchmarks)
    logprobs: bool = False  # report the chosen token's logprob
    top_logprobs: int = 0  # alternatives reported per position

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


# A logits processor sees the tokens generated so far and the logits of the next
# position; it returns new logits. Factories make a fresh, stateful one per request.
LogitsProcessor = Callable[[list[int], Any], Any]
LogitsProcessorFactory = Callable[[], LogitsProcessor]


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One sequence for the engine; built by ``api/requests.py`` from any protocol."""

    request_id: str  # unique per sequence (an n>1 request submits several)
    prompt_token_ids: tuple[int, ...]  # already templated and tokenized
    sampling: SamplingParams
    deadline: float | None = None  # time.monotonic() after which it times out
    logits_processors: tuple[LogitsProcessorFactory, ...] = ()  # grammar masks etc.
    arrival_time: float = 0.0  # time.monotonic() at submission
    skip_special_tokens: bool = True  # False when a parser needs marker tokens as text
    repetition_policy: RepetitionPolicy = RepetitionPolicy.OFF  # loop detector; adapters set it
    # In prompt order; prompt_token_ids already holds each one's expanded image tokens.
    images: tuple[ImageInput, ...] = ()


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str  # the token decoded on its own
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()  # most likely alternatives, best first


@dataclass(frozen=True)
class TokenDelta:
    """New output of one request since its previous event."""

    text: str  # safe-to-show text (never a split UTF-8 character or a stop prefix)
    token_ids: tuple[int, ...]  # tokens sampled since the previous delta
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token when requested


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache


REPETITION_DETECTED = "repetition_detected"  # Finished.stop_reason of a detected loop


@dataclass(frozen=True)
class SequenceFacts:
    """What the engine saw of one sequence, for per-request diagnostics."""

    cache_hit_type: str = "miss"  # how the prompt met the prefix cache (HitType's value)
    preempted: bool = False  # requeued at least once to recompute (the KV pool was full)
    running_at_admission: int = 0  # other sequences running when the engine accepted it
    waiting_at_admission: int = 0  # other sequences waiting then


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None  # the stop string that matched, if any
    stop_reason: str | None = None  # why a STOP came early: REPETITION_DETECTED, else None
    stop_reason_detail: str | None = None  # the detector's trigger, e.g. "token_run_len_8"
    facts: SequenceFacts = field(default_factory=SequenceFacts)


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"  # caller's fault; maps to 400
    OVERLOADED = "overloaded"  # engine refuses new work; maps to 503
    INTERNAL = "internal"  # a bug or a backend failure; maps to 500


@dataclass(frozen=True)
class EngineError:
    kind: ErrorKind
    message: str


EngineEvent = TokenDelta | Finished | EngineError


@dataclass(frozen=True)
class CacheStats:
    strategy: str = "none"
    block_size: int = 0
    blocks_total: int = 0
    blocks_free: int = 0  # allocatable now (includes reclaimable cached blocks)
    blocks_used: int = 0  # held by running sequences
    blocks_cached: int = 0  # indexed for prefix reuse (in use or not)
    hit_rate: float = 0.0  # share of prompt tokens served from the cache
    query_tokens: int = 0  # prompt tokens looked up at first admission, cumulative
    hit_tokens: int = 0  # of those, tokens served from the cache, cumulative
    storage_bytes: int = 0  # MLX memory of the KV pools


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of engine counters for /v1/status and /metrics."""

    steps_executed: int = 0
    num_running: int = 0
    num_waiting: int = 0
    total_requests_processed: int = 0
    total_prompt_tokens: int = 0
    total_completion_tokens: int = 0
    num_preemptions: int = 0  # sequences requeued to recompute because the KV pool was full
    active_memory_bytes: int = 0  # MLX memory on the device that runs the model
    peak_memory_bytes: int = 0
    cache_memory_bytes: int = 0
    mode: str = "simple"  # runtime mode in effect: simple or batched
    repetition_interventions: dict[str, int] = field(default_factory=dict)  # loops stopped, by mode
    cache: CacheStats = field(default_factory=CacheStats)
    vision_cache: VisionCacheStats | None = None  # None: a text-only model
    requests: tuple[RequestStatus, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RequestRecord:
    """One sequence's life, given to the engine's observer when it retires."""

    request_id: str
    finish_reason: FinishReason | None  # None: it ended with an EngineError
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens served from the prefix cache at admission
    arrival_time: float  # time.monotonic() at submission
    first_token_time: float | None  # None when no token was generated
    finish_time: float  # time.monotonic() at retirement
    itls: tuple[float, ...]  # seconds between consecutive output tokens (one fewer than them)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def e2e_s(self) -> float:
        return self.finish_time - self.arrival_time


# Called on the engine thread once per retired sequence; it must be quick and not block.
RequestObserver = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class RequestStatus:
    request_id: str
    phase: str  # queued, prefill or generation
    generated_tokens: int
    max_tokens: int
    cached_tokens: int = 0
    cache_hit_type: str = "miss"
    ttft_s: float | None = None
    tokens_per_second: float | None = None
    prompt_tokens: int = 0
    computed_tokens: int = 0  # tokens whose KV is cached: prefill progress
    recent_itl_s: float | None = None  # mean gap between the latest tokens
    recent_itl_max_s: float | None = None  # the longest of those gaps: a stall shows here

    @property
    def progress(self) -> float:
        return self.generated_tokens / self.max_tokens if self.max_tokens else 0.0
