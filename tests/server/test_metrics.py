"""The metrics collector and observer, fed fake engine stats and records (no model)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_mlx.engine.types import (
    CacheStats,
    EngineStats,
    FinishReason,
    RequestRecord,
    RequestStatus,
)
from vllm_mlx.server.monitors.metrics import Binding, ServerMetrics, token_buckets

MODEL = "tiny"
STATS = EngineStats(
    num_running=2,
    num_waiting=1,
    total_prompt_tokens=100,
    total_completion_tokens=40,
    num_preemptions=3,
    cache=CacheStats(blocks_total=64, blocks_used=16, query_tokens=90, hit_tokens=30),
    requests=(
        RequestStatus("a", "generation", generated_tokens=5, max_tokens=9, prompt_tokens=7),
        RequestStatus("b", "prefill", generated_tokens=0, max_tokens=9, prompt_tokens=11),
    ),
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def bound(stats: EngineStats = STATS, state: object = None) -> ServerMetrics:
    metrics = ServerMetrics()
    metrics.bind(Binding(MODEL, 2048, lambda: stats, state or SimpleNamespace()))
    return metrics


def scrape(metrics: ServerMetrics) -> Samples:
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset({"model_name": MODEL, **labels}.items()))]


def record(
    reason: FinishReason | None = FinishReason.STOP,
    itls: tuple[float, ...] = (0.02, 0.03),
    first: float | None = 10.5,
) -> RequestRecord:
    completion = 0 if first is None else len(itls) + 1
    return RequestRecord("r", reason, 12, completion, 4, 10.0, first, 12.0, itls)


def test_engine_stats_are_read_at_scrape_time() -> None:
    samples = scrape(bound())
    assert value(samples, "vllm:num_requests_running") == 2
    assert value(samples, "vllm:num_requests_waiting") == 1
    assert value(samples, "vllm:kv_cache_usage_perc") == 0.25
    assert value(samples, "vllm:prefix_cache_queries_total") == 90
    assert value(samples, "vllm:prefix_cache_hits_total") == 30
    assert value(samples, "vllm:num_preemptions_total") == 3


def test_token_counters_include_sequences_past_their_first_token() -> None:
    samples = scrape(bound())
    assert value(samples, "vllm:prompt_tokens_total") == 100 + 7  # b is still prefilling
    assert value(samples, "vllm:generation_tokens_total") == 40 + 5
    retired = replace(STATS, total_prompt_tokens=107, total_completion_tokens=45, requests=())
    after = scrape(bound(retired))  # a retires: the same totals, now from the engine's sums
    assert value(after, "vllm:prompt_tokens_total") == 107
    assert value(after, "vllm:generation_tokens_total") == 45


def test_an_empty_pool_reads_as_unused() -> None:
    samples = scrape(bound(EngineStats()))
    assert value(samples, "vllm:kv_cache_usage_perc") == 0.0


def test_repetition_interventions_by_mode() -> None:
    stats = replace(STATS, repetition_interventions={"safe": 2, "strict": 1})
    samples = scrape(bound(stats))
    assert value(samples, "vllm_mlx:repetition_interventions_total", mode="safe") == 2
    assert value(samples, "vllm_mlx:repetition_interventions_total", mode="strict") == 1


def test_rate_limited_requests_read_the_limiter() -> None:
    assert value(scrape(bound()), "vllm_mlx:rate_limited_requests_total") == 0
    off = SimpleNamespace(rate_limiter=None)
    assert value(scrape(bound(state=off)), "vllm_mlx:rate_limited_requests_total") == 0
    on = SimpleNamespace(rate_limiter=SimpleNamespace(refused=7))
    assert value(scrape(bound(state=on)), "vllm_mlx:rate_limited_requests_total") == 7


@pytest.mark.parametrize(("pressure", "level"), [("normal", 0), ("elevated", 1), ("critical", 2)])
def test_memory_pressure_and_use(pressure: str, level: int) -> None:
    reading = SimpleNamespace(pressure=pressure, used_pct=71.5)
    state = SimpleNamespace(memory_monitor=SimpleNamespace(reading=lambda: reading))
    samples = scrape(bound(state=state))
    assert value(samples, "vllm_mlx:memory_pressure") == level
    assert value(samples, "vllm_mlx:memory_used_percent") == 71.5


def test_no_memory_reading_reports_no_memory_gauges() -> None:
    state = SimpleNamespace(memory_monitor=SimpleNamespace(reading=lambda: None))
    names = {name for name, _ in scrape(bound(state=state))}
    assert not {"vllm_mlx:memory_pressure", "vllm_mlx:memory_used_percent"} & names


def test_records_feed_histograms_and_finish_counters() -> None:
    metrics = bound()
    metrics.observe(record(FinishReason.STOP, itls=(0.004, 0.02, 0.03)))
    metrics.observe(record(FinishReason.LENGTH, itls=(0.5,)))
    metrics.observe(record(None, itls=(0.01,)))  # failed after two tokens
    metrics.observe(record(FinishReason.ABORT, itls=(), first=None))  # aborted while queued
    samples = scrape(metrics)
    success = "vllm:request_success_total"
    for reason, count in [("stop", 1), ("length", 1), ("abort", 1), ("timeout", 0)]:
        assert value(samples, success, finished_reason=reason) == count
    assert value(samples, "vllm_mlx:request_failures_total") == 1
    assert value(samples, "vllm:time_to_first_token_seconds_count") == 3
    assert value(samples, "vllm:time_to_first_token_seconds_sum") == pytest.approx(1.5)
    assert value(samples, "vllm:inter_token_latency_seconds_count") == 5
    assert value(samples, "vllm:inter_token_latency_seconds_bucket", le="0.005") == 1
    assert value(samples, "vllm:inter_token_latency_seconds_bucket", le="0.01") == 2
    assert value(samples, "vllm:e2e_request_latency_seconds_count") == 3  # the failure: none
    assert value(samples, "vllm:e2e_request_latency_seconds_sum") == pytest.approx(6.0)
    assert value(samples, "vllm:request_prompt_tokens_sum") == 36
    assert value(samples, "vllm:request_generation_tokens_sum") == 4 + 2 + 0


def test_nothing_is_reported_or_observed_before_the_model_loads() -> None:
    metrics = ServerMetrics()
    metrics.observe(record())  # dropped: no model name to label it with
    assert scrape(metrics) == {}


def test_each_app_has_its_own_registry() -> None:
    first, second = bound(), bound()
    first.observe(record())
    assert value(scrape(first), "vllm:e2e_request_latency_seconds_count") == 1
    assert value(scrape(second), "vllm:e2e_request_latency_seconds_count") == 0


def test_length_buckets_run_1_2_5_up_to_the_context() -> None:
    assert token_buckets(2048) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
    assert token_buckets(1) == (1,)
