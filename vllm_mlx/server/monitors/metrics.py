"""Prometheus metrics at ``GET /metrics``, under vLLM's names so its dashboards work.

Every app has its own :class:`ServerMetrics` and registry (tests run several apps
in one process). Two sources feed it:

- the engine's observer: one :class:`RequestRecord` per retired sequence, on the
  engine thread, feeds the latency and length histograms and the finish counters;
- a collector that reads, at scrape time, what the engine and the server keep
  anyway: queue gauges, KV usage, token, prefix-cache and preemption counters,
  rate-limit refusals, memory pressure, repetition interventions and batch
  divergence.

An n>1 request runs as n sequences and counts as n requests, as vLLM counts each
of its sequences as an engine request. Every series carries vLLM's
``model_name`` label; metrics vLLM has no name for are prefixed ``vllm_mlx:``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vllm_mlx.engine.types import EngineStats, FinishReason, RequestRecord
from vllm_mlx.server.monitors.divergence import PROBE_PREFIX

router = APIRouter()

# Bucket bounds as vLLM's, so dashboards' quantiles line up; TTFT and ITL add
# finer bounds below vLLM's smallest, where small models on Apple silicon land.
TTFT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                  1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip

PRESSURE_LEVELS = {"normal": 0, "elevated": 1, "critical": 2}  # vllm_mlx:memory_pressure


def token_buckets(limit: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit`` (vLLM's length buckets)."""
    bounds: list[float] = []
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale > limit:
                return tuple(bounds)
            bounds.append(float(step * scale))
        scale *= 10


@dataclass(frozen=True)
class Binding:
    """What the metrics need from the loaded model."""

    model_name: str  # the ``model_name`` label: the id /v1/models lists
    context_length: int  # upper bound of the length histograms
    stats: Callable[[], EngineStats]  # the engine's latest stats snapshot
    state: object  # the app's state: its rate_limiter and memory_monitor, where set


class ServerMetrics:
    """One app's registry; :meth:`observe` is the engine's request observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.binding: Binding | None = None
        self._requests: _RequestMetrics | None = None
        self.registry.register(_ScrapeCollector(self))

    def bind(self, binding: Binding) -> None:
        """Label every series with the model, once it has loaded."""
        if self._requests is None:  # a restarted app keeps its series
            self._requests = _RequestMetrics(self.registry, binding)
        self.binding = binding

    def observe(self, record: RequestRecord) -> None:
        """Count one retired sequence (engine thread; prometheus_client is thread-safe)."""
        if record.request_id.startswith(PROBE_PREFIX):  # the divergence monitor's own
            return
        if self._requests is not None:
            self._requests.observe(record)

    def render(self) -> bytes:
        """The text exposition of every family."""
        return generate_latest(self.registry)


class _RequestMetrics:
    """The families fed once per retired sequence."""

    def __init__(self, registry: CollectorRegistry, binding: Binding) -> None:
        model = binding.model_name
        lengths = token_buckets(binding.context_length)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            family = Histogram(name, doc, ["model_name"], buckets=buckets, registry=registry)
            return family.labels(model)

        self.ttft = histogram(
            "vllm:time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            TTFT_BUCKETS_S,
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds",
            "Time between consecutive generated tokens of a request.",
            ITL_BUCKETS_S,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Time from arrival to the end of a finished request.",
            E2E_BUCKETS_S,
        )
        self.prompt_len = histogram(
            "vllm:request_prompt_tokens", "Prompt tokens of a finished request.", lengths
        )
        self.generation_len = histogram(
            "vllm:request_generation_tokens", "Generated tokens of a finished request.", lengths
        )
        success = Counter(
            "vllm:request_success",
            "Finished requests (each sequence of an n>1 request), by finish reason.",
            ["model_name", "finished_reason"],
            registry=registry,
        )
        self.success = {reason: success.labels(model, reason.value) for reason in FinishReason}
        self.failures = Counter(
            "vllm_mlx:request_failures",
            "Requests (sequences) that ended with an engine error instead of a finish.",
            ["model_name"],
            registry=registry,
        ).labels(model)

    def observe(self, record: RequestRecord) -> None:
        """Latency of every token produced; lengths and e2e of finished requests only."""
        ttft = record.ttft_s
        if ttft is not None:
            self.ttft.observe(ttft)
        for gap in record.itls:
            self.itl.observe(gap)
        if record.finish_reason is None:
            self.failures.inc()
            return
        self.success[record.finish_reason].inc()
        self.e2e.observe(record.e2e_s)
        self.prompt_len.observe(record.prompt_tokens)
        self.generation_len.observe(record.completion_tokens)


class _ScrapeCollector(Collector):
    """Reads the engine's stats and the server's monitors at every scrape."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        binding = self._metrics.binding
        if binding is None:  # the model has not loaded yet
            return
        model = binding.model_name
        yield from engine_families(model, binding.stats())
        yield from server_families(model, binding.state)
        yield from divergence_families(model, binding.state)


def served_tokens(stats: EngineStats) -> tuple[int, int]:
    """Prompt and generated tokens so far, of retired and of in-flight sequences.

    An in-flight prompt counts once its first token is out (its prefill is done).
    A sequence moves from in flight to retired within one snapshot, so both sums
    only grow.
    """
    started = [r for r in stats.requests if r.generated_tokens]
    prompt = stats.total_prompt_tokens + sum(r.prompt_tokens for r in started)
    generated = stats.total_completion_tokens + sum(r.generated_tokens for r in started)
    return prompt, generated


def engine_families(model: str, stats: EngineStats) -> Iterator[Metric]:
    cache = stats.cache
    prompt, generated = served_tokens(stats)
    usage = cache.blocks_used / cache.blocks_total if cache.blocks_total else 0.0
    yield _gauge(
        "vllm:num_requests_running", "Requests in the running batch.", model, stats.num_running
    )
    yield _gauge(
        "vllm:num_requests_waiting",
        "Requests waiting for admission (preempted ones included).",
        model,
        stats.num_waiting,
    )
    yield _gauge(
        "vllm:kv_cache_usage_perc", "Fraction of KV cache blocks in use (0-1).", model, usage
    )
    yield _counter("vllm:prompt_tokens", "Prompt tokens processed.", model, prompt)
    yield _counter("vllm:generation_tokens", "Tokens generated.", model, generated)
    yield _counter(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in prompt tokens looked up (once per request).",
        model,
        cache.query_tokens,
    )
    yield _counter(
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in prompt tokens served from the cache.",
        model,
        cache.hit_tokens,
    )
    yield _counter(
        "vllm:num_preemptions",
        "Requests preempted (requeued to recompute) because the KV cache was full.",
        model,
        stats.num_preemptions,
    )
    yield from _vision_cache_families(model, stats)
    interventions = CounterMetricFamily(
        "vllm_mlx:repetition_interventions",
        "Generations stopped by the repetition detector, by detector mode.",
        labels=["model_name", "mode"],
    )
    by_mode: dict[str, int] = getattr(stats, "repetition_interventions", None) or {}
    for mode, count in sorted(by_mode.items()):
        interventions.add_metric([model, mode], count)
    yield interventions


def _vision_cache_families(model: str, stats: EngineStats) -> Iterator[Metric]:
    """The vision-tower output cache (vision models only)."""
    vision = stats.vision_cache
    if vision is None:
        return
    yield _counter(
        "vllm_mlx:vision_cache_hits", "Images served from the vision cache.", model, vision.hits
    )
    yield _counter(
        "vllm_mlx:vision_cache_misses",
        "Images run through the vision tower (not in the vision cache).",
        model,
        vision.misses,
    )
    yield _gauge(
        "vllm_mlx:vision_cache_entries",
        "Image encodings in the vision cache.",
        model,
        vision.entries,
    )


def server_families(model: str, state: object) -> Iterator[Metric]:
    """What the server's middleware and monitors keep, where they are installed."""
    refused = getattr(getattr(state, "rate_limiter", None), "refused", 0)  # None: it is off
    yield _counter(
        "vllm_mlx:rate_limited_requests",
        "Requests refused by the per-client rate limit.",
        model,
        refused,
    )
    monitor = getattr(state, "memory_monitor", None)
    reading = monitor.reading() if monitor is not None else None
    if reading is None:  # no monitor, or no reading yet: nothing to report
        return
    level = PRESSURE_LEVELS.get(str(reading.pressure))
    if level is not None:
        yield _gauge(
            "vllm_mlx:memory_pressure",
            "Memory pressure: 0 normal, 1 elevated, 2 critical.",
            model,
            level,
        )
    yield _gauge(
        "vllm_mlx:memory_used_percent",
        "Memory in use, as a percentage of system memory.",
        model,
        reading.used_pct,
    )


def divergence_families(model: str, state: object) -> Iterator[Metric]:
    """The batch-divergence monitor's latest agreement and whether it serializes."""
    monitor = getattr(state, "divergence", None)
    if monitor is None:  # --batch-divergence-monitor is off
        return
    if monitor.agreement is not None:
        yield _gauge(
            "vllm_mlx:batch_divergence_agreement",
            "Greedy token agreement of the latest probe, alone against batched (0-1).",
            model,
            monitor.agreement,
        )
    yield _gauge(
        "vllm_mlx:batch_divergence_serializing",
        "1 while inference requests run one at a time because the probe diverged.",
        model,
        float(monitor.serializing),
    )


def _gauge(name: str, doc: str, model: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["model_name"])
    family.add_metric([model], value)
    return family


def _counter(name: str, doc: str, model: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["model_name"])
    family.add_metric([model], value)
    return family


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the server's metrics."""
    server_metrics: ServerMetrics = request.app.state.metrics
    return Response(server_metrics.render(), media_type=CONTENT_TYPE_LATEST)
