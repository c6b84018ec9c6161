"""Per-request timing records and their aggregation into per-level statistics.

Definitions (all per request, then aggregated over the level):

- TTFT: request sent → first chunk carrying output.
- ITL: gap between consecutive output chunks, divided by the tokens in the later
  chunk when known (logprobs / per-chunk usage) or estimated from the final
  usage; otherwise the raw per-chunk gap (``itl_basis == "chunk"``).
- TPOT: (e2e − TTFT) / (output tokens − 1).
- decode tok/s: (output tokens − 1) / (e2e − TTFT), i.e. 1 / TPOT; the first
  token belongs to TTFT, so it is not part of the decode phase.
- cached tokens: ``usage.prompt_tokens_details.cached_tokens`` of the final
  usage chunk; the cache hit rate of a level is Σ cached / Σ prompt tokens over
  the requests that reported both.
- turns: with ``--multi-turn``, turn 1 is a conversation's first request and
  turns ≥ 2 resend the history, so their prefix can come from the cache.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vllm_mlx.bench.status import ServerLevelStatus


@dataclass(frozen=True)
class RequestRecord:
    ok: bool  # False for HTTP errors, broken streams and timeouts
    error: str | None = None  # why the request failed
    ttft_s: float | None = None  # request sent → first output chunk
    e2e_s: float | None = None  # request sent → last output chunk
    itl_s: tuple[float, ...] = ()  # inter-token (or inter-chunk) latencies
    itl_per_token: bool = True  # False when ITL values are raw per-chunk gaps
    prompt_tokens: int | None = None  # usage.prompt_tokens (None when not reported)
    output_tokens: int = 0  # usage.completion_tokens, else tokens/chunks counted
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    turn: int = 1  # 1-based turn of its conversation (--multi-turn)
    token_times: tuple[float, ...] = ()  # perf_counter arrival of each output chunk
    itl_times: tuple[float, ...] = ()  # perf_counter arrival closing each itl_s value (aligned)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first one."""
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def decode_tok_s(self) -> float | None:
        """Decode-phase throughput of this request (1 / TPOT)."""
        tpot = self.tpot_s
        return 1.0 / tpot if tpot else None


def failed(error: str) -> RequestRecord:
    """A record for a request that did not complete."""
    return RequestRecord(ok=False, error=error)


@dataclass(frozen=True)
class TurnStats:
    turn: int  # 1-based turn within each conversation
    requests: int  # successful requests of this turn
    ttft_ms_p50: float | None
    mean_prompt_tokens: float | None  # usage.prompt_tokens
    mean_cached_tokens: float | None  # usage.prompt_tokens_details.cached_tokens


@dataclass(frozen=True)
class LevelStats:
    label: str  # "server" or "mlx-lm direct"
    concurrency: int  # requests kept in flight
    requests: int  # requests issued (ok + failed)
    failures: int  # HTTP errors, broken streams, timeouts
    wall_s: float  # first send → last completion
    output_tokens: int  # completion tokens of successful requests
    output_tok_s: float  # output_tokens / wall_s
    request_s: float  # successful requests / wall_s
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    itl_ms_p50: float | None
    itl_ms_p95: float | None
    itl_basis: str  # "token" or "chunk" (see module docstring)
    tpot_ms_p50: float | None
    decode_tok_s_p50: float | None  # per-request decode tok/s, median
    mean_prompt_tokens: float | None  # from usage.prompt_tokens
    mean_cached_tokens: float | None = None  # None when no request reported cached_tokens
    cache_hit_rate: float | None = None  # Σ cached / Σ prompt tokens, this level's requests
    turns: int = 1  # highest turn seen (--multi-turn)
    ttft_ms_p50_turn1: float | None = None  # TTFT p50 of first turns
    ttft_ms_p50_later: float | None = None  # TTFT p50 of turns >= 2 (None for one turn)
    mean_cached_tokens_turn1: float | None = None
    mean_cached_tokens_later: float | None = None  # turns >= 2
    per_turn: tuple[TurnStats, ...] = ()  # one entry per turn, in order
    server: ServerLevelStatus | None = None  # GET /v1/status around the level (server runs)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default.

    Returns None for an empty sequence, so "no data" survives into JSON as null.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def chunk_itls(
    times: Sequence[float], chunk_tokens: Sequence[int | None], total_tokens: int | None
) -> tuple[tuple[float, ...], bool]:
    """Inter-token latencies from output-chunk arrival times.

    ``chunk_tokens[i]`` is the token count of chunk i when the stream told it
    (logprobs or per-chunk usage). A chunk of k tokens contributes k equal
    values gap/k, so percentiles are over tokens. Without per-chunk counts,
    the final usage gives an average tokens-per-chunk after the first chunk.
    Returns (values, per_token); per_token is False for raw chunk gaps.
    """
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if not gaps:
        return (), True
    counts = _known_counts(chunk_tokens)
    if counts is not None:
        return _spread(gaps, counts), True
    if total_tokens is not None and total_tokens > len(times):
        per_chunk = (total_tokens - 1) / (len(times) - 1)
        return tuple(gap / per_chunk for gap in gaps), True
    if total_tokens is not None and total_tokens == len(times):
        return tuple(gaps), True  # exactly one token per chunk
    return tuple(gaps), False


def chunk_itl_times(
    times: Sequence[float], chunk_tokens: Sequence[int | None]
) -> tuple[float, ...]:
    """When each value of :func:`chunk_itls` ended: the arrival of its closing chunk.

    Aligned with ``chunk_itls(times, chunk_tokens, ...)[0]``: a chunk of k
    known tokens closes k values, otherwise each chunk after the first closes one.
    """
    if len(times) < 2:
        return ()
    counts = _known_counts(chunk_tokens)
    if counts is None:
        return tuple(times[1:])
    return tuple(t for t, n in zip(times[1:], counts, strict=True) for _ in range(n))


def _known_counts(chunk_tokens: Sequence[int | None]) -> list[int] | None:
    """Tokens of each chunk after the first, if the stream told every one of them."""
    later = chunk_tokens[1:]
    known = [n for n in later if n is not None]
    return known if len(known) == len(later) else None


def _spread(gaps: Sequence[float], counts: Sequence[int]) -> tuple[float, ...]:
    """Split each gap evenly over the tokens of its chunk."""
    values: list[float] = []
    for gap, count in zip(gaps, counts, strict=True):
        if count > 0:
            values.extend([gap / count] * count)
    return tuple(values)


def to_ms(value: float | None) -> float | None:
    """Seconds as milliseconds; None stays None."""
    return None if value is None else value * 1000.0


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is absent (or den is 0)."""
    return None if num is None or not den else num / den


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean_cached(records: Sequence[RequestRecord]) -> float | None:
    return _mean([r.cached_tokens for r in records if r.cached_tokens is not None])


def _ttft_p50(records: Sequence[RequestRecord]) -> float | None:
    return to_ms(percentile([r.ttft_s for r in records if r.ttft_s is not None], 50))


def cache_hit_rate(records: Sequence[RequestRecord]) -> float | None:
    """Σ cached / Σ prompt tokens over records that reported both (None if none did)."""
    both = [r for r in records if r.cached_tokens is not None and r.prompt_tokens]
    prompt = sum(r.prompt_tokens or 0 for r in both)
    return sum(r.cached_tokens or 0 for r in both) / prompt if prompt else None


def turn_stats(ok: Sequence[RequestRecord]) -> tuple[TurnStats, ...]:
    """Per-turn TTFT and cache figures of the successful records."""
    turns = sorted({r.turn for r in ok})
    result = []
    for turn in turns:
        group = [r for r in ok if r.turn == turn]
        result.append(
            TurnStats(
                turn=turn,
                requests=len(group),
                ttft_ms_p50=_ttft_p50(group),
                mean_prompt_tokens=_mean([r.prompt_tokens for r in group if r.prompt_tokens]),
                mean_cached_tokens=_mean_cached(group),
            )
        )
    return tuple(result)


def summarize(
    label: str, concurrency: int, records: Sequence[RequestRecord], wall_s: float
) -> LevelStats:
    """Aggregate one level's records into its statistics."""
    ok = [r for r in records if r.ok]
    first, later = [r for r in ok if r.turn == 1], [r for r in ok if r.turn >= 2]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    itls = [v for r in ok for v in r.itl_s]
    tpots = [t for t in (r.tpot_s for r in ok) if t is not None]
    decode = [d for d in (r.decode_tok_s for r in ok) if d is not None]
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    output_tokens = sum(r.output_tokens for r in ok)
    rate = 1.0 / wall_s if wall_s > 0 else 0.0
    return LevelStats(
        label=label,
        concurrency=concurrency,
        requests=len(records),
        failures=len(records) - len(ok),
        wall_s=wall_s,
        output_tokens=output_tokens,
        output_tok_s=output_tokens * rate,
        request_s=len(ok) * rate,
        ttft_ms_p50=to_ms(percentile(ttfts, 50)),
        ttft_ms_p95=to_ms(percentile(ttfts, 95)),
        itl_ms_p50=to_ms(percentile(itls, 50)),
        itl_ms_p95=to_ms(percentile(itls, 95)),
        itl_basis="token" if all(r.itl_per_token for r in ok) else "chunk",
        tpot_ms_p50=to_ms(percentile(tpots, 50)),
        decode_tok_s_p50=percentile(decode, 50),
        mean_prompt_tokens=sum(prompts) / len(prompts) if prompts else None,
        mean_cached_tokens=_mean_cached(ok),
        cache_hit_rate=cache_hit_rate(ok),
        turns=max((r.turn for r in records), default=1),
        ttft_ms_p50_turn1=_ttft_p50(first),
        ttft_ms_p50_later=_ttft_p50(later),
        mean_cached_tokens_turn1=_mean_cached(first),
        mean_cached_tokens_later=_mean_cached(later),
        per_turn=turn_stats(ok),
    )


def decode_ratio(server: LevelStats, baseline: LevelStats) -> float | None:
    """server / baseline median per-request decode tok/s (None when either is missing)."""
    if not server.decode_tok_s_p50 or not baseline.decode_tok_s_p50:
        return None
    return server.decode_tok_s_p50 / baseline.decode_tok_s_p50
