"""GET /metrics on real servers: vLLM's names and types, and counters that move by
exactly the requests and tokens served (read from each response's usage)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error, sse_events, wait_idle

MODEL = "metrics-tiny"  # --served-model-name: the model_name label
KEY = "k"  # the key of test_auth's server, which this module shares

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TYPES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm_mlx:request_failures": "counter",
    "vllm_mlx:rate_limited_requests": "counter",
    "vllm_mlx:repetition_interventions": "counter",
    "vllm_mlx:memory_pressure": "gauge",
    "vllm_mlx:memory_used_percent": "gauge",
}


@pytest.fixture(scope="module")
def url(launch_server: LaunchServer) -> str:
    return launch_server("--served-model-name", MODEL).base_url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def scrape(http: httpx.Client, **headers: str) -> Samples:
    resp = http.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset({"model_name": MODEL, **labels}.items()))]


class Delta:
    """How far each series moved between two scrapes."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def chat(http: httpx.Client, content: str, max_tokens: int, stream: bool = False) -> Any:
    """The usage of one greedy chat completion."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if not stream:
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()["usage"]
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        return list(sse_events(resp.iter_lines()))[-1]["usage"]


def complete(http: httpx.Client, prompt: str, max_tokens: int, n: int = 1) -> Any:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "n": n, "temperature": 0}
    resp = http.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["usage"]


def test_counters_move_by_exactly_what_was_served(http: httpx.Client, url: str) -> None:
    wait_idle(url)
    before = scrape(http)
    tag = uuid.uuid4().hex[:8]  # a fresh prompt: only the repeat below hits the cache
    usages = [
        chat(http, f"{tag} The capital of France is", 3),
        chat(http, f"{tag} The capital of France is", 5),
        chat(http, f"{tag} Water boils at", 7, stream=True),
        complete(http, f"{tag} Once upon a time", 2),
    ]
    moved = Delta(before, scrape(http))
    assert [u["completion_tokens"] for u in usages] == [3, 5, 7, 2]  # all end at max_tokens
    prompt = sum(u["prompt_tokens"] for u in usages)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert cached > 0
    assert moved("vllm:request_success_total", finished_reason="length") == 4
    for reason in ("stop", "abort", "timeout"):
        assert moved("vllm:request_success_total", finished_reason=reason) == 0
    assert moved("vllm_mlx:request_failures_total") == 0
    assert moved("vllm:time_to_first_token_seconds_count") == 4
    assert moved("vllm:e2e_request_latency_seconds_count") == 4
    assert moved("vllm:inter_token_latency_seconds_count") == (3 - 1) + (5 - 1) + (7 - 1) + (2 - 1)
    assert moved("vllm:request_prompt_tokens_count") == 4
    assert moved("vllm:request_prompt_tokens_sum") == prompt
    assert moved("vllm:request_generation_tokens_sum") == 17
    assert moved("vllm:prompt_tokens_total") == prompt
    assert moved("vllm:generation_tokens_total") == 17
    assert moved("vllm:prefix_cache_queries_total") == prompt
    assert moved("vllm:prefix_cache_hits_total") == cached
    assert moved("vllm:num_preemptions_total") == 0


def test_each_sequence_of_an_n_request_counts_as_a_request(http: httpx.Client, url: str) -> None:
    wait_idle(url)
    before = scrape(http)
    usage = complete(http, f"{uuid.uuid4().hex[:8]} The quick brown fox", 4, n=3)
    moved = Delta(before, scrape(http))
    assert usage["completion_tokens"] == 12
    assert moved("vllm:request_success_total", finished_reason="length") == 3
    assert moved("vllm:e2e_request_latency_seconds_count") == 3
    assert moved("vllm:generation_tokens_total") == 12
    # Each sequence has its prompt; the response's usage counts it once.
    assert moved("vllm:prompt_tokens_total") == 3 * usage["prompt_tokens"]
    assert moved("vllm:prefix_cache_queries_total") == 3 * usage["prompt_tokens"]


def test_every_family_has_its_type_and_the_model_name(http: httpx.Client, url: str) -> None:
    chat(http, "Hi", 2)  # every histogram has had a sample
    wait_idle(url)
    resp = http.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert {name: families[name].type for name in TYPES} == TYPES
    for name in set(TYPES) - {"vllm_mlx:repetition_interventions"}:  # no samples until one
        assert families[name].samples, name
        assert all(s.labels["model_name"] == MODEL for s in families[name].samples), name
    samples = scrape(http)
    assert value(samples, "vllm:num_requests_running") == 0
    assert value(samples, "vllm:num_requests_waiting") == 0
    assert value(samples, "vllm:kv_cache_usage_perc") == 0.0  # cached blocks are reclaimable
    assert value(samples, "vllm_mlx:rate_limited_requests_total") == 0
    assert value(samples, "vllm_mlx:memory_pressure") in (0, 1, 2)
    assert 0 < value(samples, "vllm_mlx:memory_used_percent") <= 100


def test_a_running_request_shows_in_the_gauges(http: httpx.Client, url: str) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 2000,
        "ignore_eos": True,  # sampled, the tiny model may otherwise end before the scrape
        "stream": True,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        for chunk in sse_events(resp.iter_lines()):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                break  # a token is out: the request runs (until the stream closes)
        # The engine publishes its stats at most every few steps: poll for them.
        deadline = time.monotonic() + 10
        while value(samples := scrape(http), "vllm:num_requests_running") != 1:
            assert time.monotonic() < deadline, "the running request never showed"
            time.sleep(0.05)
        assert value(samples, "vllm:kv_cache_usage_perc") > 0
    wait_idle(url)  # closing the stream aborted it
    assert value(scrape(http), "vllm:request_success_total", finished_reason="abort") >= 1


def test_rate_limited_requests_are_counted(launch_server: LaunchServer) -> None:
    url = launch_server("--rate-limit", "1", "--served-model-name", MODEL).base_url
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.Client(base_url=url, timeout=60) as http:
        codes = [http.post("/v1/messages/count_tokens", json=body).status_code for _ in range(3)]
        assert codes == [200, 429, 429]
        assert value(scrape(http), "vllm_mlx:rate_limited_requests_total") == 2


def test_metrics_require_the_api_key(launch_server: LaunchServer) -> None:
    url = launch_server("--api-key", KEY).base_url
    with httpx.Client(base_url=url, timeout=60) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            error = assert_openai_error(http.get("/metrics", headers=headers), 401)
            assert error["type"] == "authentication_error"
        samples = scrape(http, Authorization=f"Bearer {KEY}")
    assert any(name == "vllm:num_requests_running" for name, _ in samples)
