"""Percentiles, ITL derivation and per-level aggregation from synthetic records."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vllm_mlx.bench.stats import (
    RequestRecord,
    cache_hit_rate,
    chunk_itls,
    decode_ratio,
    failed,
    percentile,
    summarize,
)


def test_percentile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)


def test_percentile_of_nothing_is_none_and_bad_q_raises() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_itl_uses_per_chunk_token_counts() -> None:
    # Chunk 1 holds 2 tokens after 0.2 s, chunk 2 one token after 0.1 s.
    values, per_token = chunk_itls([0.0, 0.2, 0.3], [1, 2, 1], total_tokens=4)
    assert per_token and values == pytest.approx((0.1, 0.1, 0.1))


def test_itl_estimated_from_final_usage_when_chunks_hold_several_tokens() -> None:
    # stream interval 2: 4 chunks, 7 tokens -> 2 tokens per chunk after the first.
    values, per_token = chunk_itls([0.0, 0.2, 0.4, 0.6], [None] * 4, total_tokens=7)
    assert per_token and values == pytest.approx((0.1, 0.1, 0.1))


def test_itl_falls_back_to_chunk_gaps() -> None:
    assert chunk_itls([0.0, 0.1, 0.3], [None] * 3, total_tokens=3) == (
        pytest.approx((0.1, 0.2)),
        True,
    )
    values, per_token = chunk_itls([0.0, 0.1, 0.3], [None] * 3, total_tokens=None)
    assert not per_token and values == pytest.approx((0.1, 0.2))
    assert chunk_itls([0.5], [1], total_tokens=1) == ((), True)


def test_record_tpot_and_decode_rate() -> None:
    record = RequestRecord(ok=True, ttft_s=0.1, e2e_s=1.1, output_tokens=11)
    assert record.tpot_s == pytest.approx(0.1)
    assert record.decode_tok_s == pytest.approx(10.0)
    assert RequestRecord(ok=True, ttft_s=0.1, e2e_s=0.1, output_tokens=1).tpot_s is None


def _record(ttft: float, tpot: float, tokens: int, prompt: int) -> RequestRecord:
    return RequestRecord(
        ok=True,
        ttft_s=ttft,
        e2e_s=ttft + tpot * (tokens - 1),
        itl_s=(tpot,) * (tokens - 1),
        prompt_tokens=prompt,
        output_tokens=tokens,
    )


def test_summarize_aggregates_a_level() -> None:
    records = [
        _record(0.10, 0.02, 11, 100),
        _record(0.20, 0.04, 11, 102),
        _record(0.30, 0.02, 11, 104),
        failed("HTTP 500: boom"),
    ]
    stats = summarize("server", 2, records, wall_s=2.0)
    assert (stats.requests, stats.failures, stats.output_tokens) == (4, 1, 33)
    assert stats.output_tok_s == pytest.approx(16.5)
    assert stats.request_s == pytest.approx(1.5)
    assert stats.ttft_ms_p50 == pytest.approx(200.0)
    assert stats.ttft_ms_p95 == pytest.approx(290.0)
    assert stats.itl_ms_p50 == pytest.approx(20.0)
    assert stats.itl_ms_p95 == pytest.approx(40.0)
    assert stats.tpot_ms_p50 == pytest.approx(20.0)
    assert stats.decode_tok_s_p50 == pytest.approx(50.0)
    assert stats.mean_prompt_tokens == pytest.approx(102.0)
    assert stats.itl_basis == "token"


def test_summarize_of_only_failures_has_no_latencies() -> None:
    stats = summarize("server", 1, [failed("x"), failed("y")], wall_s=0.5)
    assert (stats.failures, stats.output_tok_s, stats.request_s) == (2, 0.0, 0.0)
    assert stats.ttft_ms_p50 is None and stats.mean_prompt_tokens is None


def test_chunk_basis_is_reported_when_any_request_lacked_token_counts() -> None:
    chunky = RequestRecord(ok=True, ttft_s=0.1, e2e_s=0.3, itl_s=(0.1, 0.1), itl_per_token=False)
    stats = summarize("server", 1, [_record(0.1, 0.02, 3, 10), chunky], wall_s=1.0)
    assert stats.itl_basis == "chunk"


def test_decode_ratio() -> None:
    fast = summarize("server", 1, [_record(0.1, 0.01, 11, 10)], wall_s=1.0)
    slow = summarize("mlx-lm direct", 1, [_record(0.1, 0.02, 11, 10)], wall_s=1.0)
    assert decode_ratio(fast, slow) == pytest.approx(2.0)
    assert decode_ratio(summarize("server", 1, [failed("x")], 1.0), slow) is None


def test_cached_tokens_and_hit_rate_of_a_level() -> None:
    records = [
        replace(_record(0.1, 0.02, 3, 100), cached_tokens=0),
        replace(_record(0.1, 0.02, 3, 100), cached_tokens=80),
        _record(0.1, 0.02, 3, 50),  # no cached_tokens reported: left out of both means
    ]
    stats = summarize("server", 2, records, wall_s=1.0)
    assert stats.mean_cached_tokens == pytest.approx(40.0)
    assert stats.cache_hit_rate == pytest.approx(80 / 200)
    assert cache_hit_rate([_record(0.1, 0.02, 3, 50)]) is None
    plain = summarize("server", 1, [_record(0.1, 0.02, 3, 50)], wall_s=1.0)
    assert plain.mean_cached_tokens is None and plain.cache_hit_rate is None


def test_turns_split_ttft_and_cached_tokens() -> None:
    def turn(n: int, ttft: float, cached: int) -> RequestRecord:
        return replace(_record(ttft, 0.01, 3, 100 * n), turn=n, cached_tokens=cached)

    records = [turn(1, 0.4, 0), turn(1, 0.6, 10), turn(2, 0.1, 90), turn(3, 0.2, 190)]
    stats = summarize("server", 2, [*records, replace(failed("x"), turn=3)], wall_s=1.0)
    assert stats.turns == 3
    assert stats.ttft_ms_p50_turn1 == pytest.approx(500.0)
    assert stats.ttft_ms_p50_later == pytest.approx(150.0)
    assert stats.mean_cached_tokens_turn1 == pytest.approx(5.0)
    assert stats.mean_cached_tokens_later == pytest.approx(140.0)
    assert [(t.turn, t.requests, t.mean_prompt_tokens) for t in stats.per_turn] == [
        (1, 2, 100.0), (2, 1, 200.0), (3, 1, 300.0),
    ]  # fmt: skip
    assert stats.per_turn[1].ttft_ms_p50 == pytest.approx(100.0)
    single = summarize("server", 1, [_record(0.1, 0.01, 3, 10)], wall_s=1.0)
    assert single.turns == 1 and single.ttft_ms_p50_later is None
