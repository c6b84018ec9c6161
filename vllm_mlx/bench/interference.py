"""Long-prompt interference probe (issue 16, item 4): does one long prefill stall short chats?

``--interference-probe K`` runs four scenarios, one after another:

1. ``chats alone``: K concurrent streaming chats (``--prompt-tokens``,
   ``--max-tokens``): their inter-token latencies (ITL, all chats pooled)
   p50/p95 and the slowest TTFT.
2. ``long alone``: one ~``--long-prompt-tokens`` prompt (max_tokens 4): its TTFT.
3. ``long during chats``: the K chats; once each has streamed a token (or
   ended), the long prompt. The chats' ITL over the values closed after the
   long prompt was sent (the interference window) and over the whole run, and
   the long prompt's TTFT.
4. ``chats after long``: the long prompt, then ``--interference-delay`` seconds
   later the K chats: each chat's TTFT, and the long prompt's.

Every request has its own prompt (a nonce per invocation, a salt per scenario
and per request), so nothing is served from the prefix cache of another.

Verdict, issue 16's acceptance criteria, printed PASS/FAIL (they do not set the
exit status; a failed request does, 1):

(a) chats' window ITL p95 in 3 ≤ 2 × their ITL p95 in 1;
(b) every chat's TTFT in 4 ≤ 5 s;
(c) the long prompt's TTFT in 3 and in 4 ≤ 1.5 × its TTFT in 2.

Text lines and JSON lines (to ``--json`` PATH when given, else stdout): one per
request, one per scenario, then a summary with the criteria.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from vllm_mlx.bench.client import make_client, stream_messages
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.prompts import make_prompts
from vllm_mlx.bench.report import append_json
from vllm_mlx.bench.runner import json_meta, log_failures, output_stream, run_requests
from vllm_mlx.bench.stats import RequestRecord, percentile, ratio, to_ms
from vllm_mlx.bench.status import (
    ServerLevelStatus,
    StatusMonitor,
    make_status_client,
    status_url,
)
from vllm_mlx.bench.workload import user_message

logger = logging.getLogger("vllm_mlx.bench")

LONG_MAX_TOKENS = 4  # output of the long prompt: only its TTFT matters
ITL_RATIO_LIMIT = 2.0  # (a) window ITL p95 / ITL p95 alone
CHAT_TTFT_LIMIT_S = 5.0  # (b) every chat's TTFT after the long prompt
LONG_TTFT_RATIO_LIMIT = 1.5  # (c) long TTFT with chats / alone
CHATS_ALONE, LONG_ALONE = "chats alone", "long alone"
LONG_DURING, CHATS_AFTER = "long during chats", "chats after long"
SCENARIOS = (CHATS_ALONE, LONG_ALONE, LONG_DURING, CHATS_AFTER)
_TAGS = {CHATS_ALONE: "alone", LONG_ALONE: "alone", LONG_DURING: "during", CHATS_AFTER: "after"}


def run_interference_probe(cfg: BenchConfig) -> int:
    """Run the four scenarios, print text and JSON lines; 1 if a request failed."""
    nonce = str(time.time_ns())
    text, rows, ok = asyncio.run(_probe(cfg, nonce))
    out = output_stream(cfg)
    out.write(text)
    out.flush()
    meta = json_meta(cfg, "server")
    meta.update(
        interference_k=cfg.interference_probe,
        long_prompt_tokens_target=cfg.long_prompt_tokens,
        long_max_tokens=LONG_MAX_TOKENS,
        interference_delay_s=cfg.interference_delay,
    )
    lines = [json.dumps({"probe": "interference", **row, **meta}, sort_keys=True) for row in rows]
    append_json(cfg.json_path or "-", lines)
    return 0 if ok else 1


# --- prompts and requests ------------------------------------------------------------------


def chat_text(cfg: BenchConfig, nonce: str, tag: str, index: int) -> str:
    """The user message of one chat: ~--prompt-tokens words, its own salt."""
    salt = f"interference-chat:{nonce}:{tag}:{index}"
    return make_prompts(1, cfg.prompt_tokens, cfg.seed, salt=salt)[0]


def long_text(cfg: BenchConfig, nonce: str, tag: str) -> str:
    """The long user message of one scenario: ~--long-prompt-tokens words."""
    salt = f"interference-long:{nonce}:{tag}"
    return make_prompts(1, cfg.long_prompt_tokens, cfg.seed, salt=salt)[0]


@dataclass(frozen=True)
class ScenarioRun:
    """The requests of one scenario as they came back, with their send times."""

    scenario: str
    chats: tuple[RequestRecord, ...]  # in chat order; empty for "long alone"
    long: RequestRecord | None  # None for "chats alone"
    chats_sent: float | None  # perf_counter when the chats were sent
    long_sent: float | None  # perf_counter when the long prompt was sent


async def _chat(
    client: httpx.AsyncClient,
    cfg: BenchConfig,
    nonce: str,
    tag: str,
    index: int,
    started: asyncio.Event | None = None,
) -> RequestRecord:
    """One chat; ``started`` is set at its first output chunk, or when it ends without one."""
    messages = [user_message(chat_text(cfg, nonce, tag, index))]
    request_id = f"bench-interference-{tag}-chat{index}"
    try:
        reply = await stream_messages(
            client, cfg, messages, request_id, on_output=None if started is None else started.set
        )
    finally:
        if started is not None:
            started.set()
    return reply.record


async def _long(
    client: httpx.AsyncClient, cfg: BenchConfig, nonce: str, tag: str
) -> tuple[RequestRecord, float]:
    """The long prompt; returns its record and when it was sent."""
    messages = [user_message(long_text(cfg, nonce, tag))]
    sent = time.perf_counter()
    reply = await stream_messages(
        client, cfg, messages, f"bench-interference-{tag}-long", max_tokens=LONG_MAX_TOKENS
    )
    return reply.record, sent


async def _chats_alone(client: httpx.AsyncClient, cfg: BenchConfig, nonce: str) -> ScenarioRun:
    tag, k = _TAGS[CHATS_ALONE], cfg.interference_probe
    sent = time.perf_counter()
    chats = await asyncio.gather(*(_chat(client, cfg, nonce, tag, i) for i in range(k)))
    return ScenarioRun(CHATS_ALONE, tuple(chats), None, sent, None)


async def _long_alone(client: httpx.AsyncClient, cfg: BenchConfig, nonce: str) -> ScenarioRun:
    long, sent = await _long(client, cfg, nonce, _TAGS[LONG_ALONE])
    return ScenarioRun(LONG_ALONE, (), long, None, sent)


async def _long_during_chats(
    client: httpx.AsyncClient, cfg: BenchConfig, nonce: str
) -> ScenarioRun:
    """The chats; once every one has streamed a token (or ended), the long prompt."""
    tag, k = _TAGS[LONG_DURING], cfg.interference_probe
    started = [asyncio.Event() for _ in range(k)]
    chats_sent = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_chat(client, cfg, nonce, tag, i, started[i])) for i in range(k)]
        await asyncio.gather(*(event.wait() for event in started))
        long, long_sent = await _long(client, cfg, nonce, tag)
    chats = tuple(task.result() for task in tasks)
    return ScenarioRun(LONG_DURING, chats, long, chats_sent, long_sent)


async def _chats_after_long(client: httpx.AsyncClient, cfg: BenchConfig, nonce: str) -> ScenarioRun:
    """The long prompt; --interference-delay seconds later, the chats."""
    tag, k = _TAGS[CHATS_AFTER], cfg.interference_probe
    async with asyncio.TaskGroup() as group:
        long_task = group.create_task(_long(client, cfg, nonce, tag))
        await asyncio.sleep(cfg.interference_delay)
        chats_sent = time.perf_counter()
        tasks = [group.create_task(_chat(client, cfg, nonce, tag, i)) for i in range(k)]
    long, long_sent = long_task.result()
    chats = tuple(task.result() for task in tasks)
    return ScenarioRun(CHATS_AFTER, chats, long, chats_sent, long_sent)


async def _warm_up(client: httpx.AsyncClient, cfg: BenchConfig, nonce: str) -> None:
    """--warmup N: N unmeasured chats, K at a time, with their own prompts."""
    if cfg.warmup:
        prompts = [chat_text(cfg, nonce, "warmup", i) for i in range(cfg.warmup)]
        records, _ = await run_requests(
            client, cfg, prompts, cfg.interference_probe, "interference-warmup"
        )
        log_failures(records, "warmup")


async def run_scenarios(
    client: httpx.AsyncClient, cfg: BenchConfig, nonce: str
) -> dict[str, ScenarioRun]:
    """The four scenarios in order (see the module docstring)."""
    runs: dict[str, ScenarioRun] = {}
    steps = (_chats_alone, _long_alone, _long_during_chats, _chats_after_long)
    for scenario, step in zip(SCENARIOS, steps, strict=True):
        logger.info("interference probe: %s", scenario)
        run = await step(client, cfg, nonce)
        records = [*run.chats, *([run.long] if run.long is not None else [])]
        log_failures(records, f"interference probe ({scenario})")
        runs[scenario] = run
    return runs


async def _probe(cfg: BenchConfig, nonce: str) -> tuple[str, list[dict[str, Any]], bool]:
    """Run the probe; returns (text, JSON rows, every request ok)."""
    async with (
        make_client(cfg, cfg.interference_probe + 1) as client,
        make_status_client(cfg) as status_client,
    ):
        await _warm_up(client, cfg, nonce)
        monitor = StatusMonitor(status_client, status_url(cfg.base_url), cfg.status_interval)
        async with monitor:
            runs = await run_scenarios(client, cfg, nonce)
    stats = {name: scenario_stats(run) for name, run in runs.items()}
    criteria = verdict(stats)
    requests = [r for run in runs.values() for r in request_rows(run)]
    ok = all(r.ok for r in requests)
    summary = {
        "kind": "summary",
        "criteria": [asdict(c) for c in criteria],
        "all_passed": all(c.passed for c in criteria),
        "requests_failed": sum(not r.ok for r in requests),
        "server": None if monitor.result is None else asdict(monitor.result),
    }
    rows = [
        *({"kind": "request", **asdict(r)} for r in requests),
        *({"kind": "scenario", **asdict(s)} for s in stats.values()),
        summary,
    ]
    text = render(cfg, stats, criteria, requests, monitor.result)
    return text, rows, ok


# --- statistics ----------------------------------------------------------------------------


def itls_after(records: Sequence[RequestRecord], since: float) -> list[float]:
    """ITL values (seconds) of the ok records whose closing chunk arrived after ``since``.

    ``since`` is a perf_counter time (when the long prompt was sent). A gap that
    straddles it counts: the long prompt may have stalled it.
    """
    return [
        value
        for r in records
        if r.ok
        for value, end in zip(r.itl_s, r.itl_times, strict=False)
        if end > since
    ]


@dataclass(frozen=True)
class InterferenceRequest:
    scenario: str
    role: str  # "chat" or "long"
    index: int  # chat number; 0 for the long prompt
    ok: bool
    error: str | None
    ttft_ms: float | None
    prompt_tokens: int | None  # usage.prompt_tokens
    output_tokens: int
    cached_tokens: int | None  # usage.prompt_tokens_details.cached_tokens

    @classmethod
    def of(cls, scenario: str, role: str, index: int, r: RequestRecord) -> InterferenceRequest:
        return cls(
            scenario, role, index, r.ok, r.error, to_ms(r.ttft_s), r.prompt_tokens,
            r.output_tokens, r.cached_tokens,
        )  # fmt: skip


def request_rows(run: ScenarioRun) -> list[InterferenceRequest]:
    """One row per request of a scenario: the chats, then the long prompt."""
    rows = [InterferenceRequest.of(run.scenario, "chat", i, r) for i, r in enumerate(run.chats)]
    if run.long is not None:
        rows.append(InterferenceRequest.of(run.scenario, "long", 0, run.long))
    return rows


@dataclass(frozen=True)
class ScenarioStats:
    scenario: str
    chats: int  # chat requests sent
    chats_failed: int
    chat_ttft_ms: tuple[float | None, ...]  # each chat's TTFT in chat order (None: failed)
    chat_ttft_ms_max: float | None
    itl_count: int  # ITL values of all chats, pooled
    itl_ms_p50: float | None
    itl_ms_p95: float | None
    window_itl_count: int | None  # ITL values closed after the long prompt was sent
    window_itl_ms_p50: float | None  # (long during chats only; None elsewhere)
    window_itl_ms_p95: float | None
    long_ok: bool | None  # None: no long prompt in this scenario
    long_ttft_ms: float | None
    long_prompt_tokens: int | None  # usage.prompt_tokens of the long prompt
    long_cached_tokens: int | None
    long_offset_ms: float | None  # long prompt sent − chats sent (negative: long first)
    long_done_before_chats: bool | None  # the long prompt ended before the chats were sent


def scenario_stats(run: ScenarioRun) -> ScenarioStats:
    """The figures of one scenario (pure: times come from the records)."""
    ok = [r for r in run.chats if r.ok]
    ttfts = tuple(to_ms(r.ttft_s) if r.ok else None for r in run.chats)
    known = [t for t in ttfts if t is not None]
    itls = [v for r in ok for v in r.itl_s]
    offset = window = None
    if run.long_sent is not None and run.chats_sent is not None:
        offset = run.long_sent - run.chats_sent
        if offset > 0:  # the chats were running: cut their ITLs at the long prompt's send
            window = itls_after(ok, run.long_sent)
    long = run.long
    done_before = None
    if offset is not None and offset <= 0 and long is not None and long.e2e_s is not None:
        done_before = long.e2e_s < -offset
    return ScenarioStats(
        scenario=run.scenario,
        chats=len(run.chats),
        chats_failed=len(run.chats) - len(ok),
        chat_ttft_ms=ttfts,
        chat_ttft_ms_max=max(known) if known else None,
        itl_count=len(itls),
        itl_ms_p50=to_ms(percentile(itls, 50)),
        itl_ms_p95=to_ms(percentile(itls, 95)),
        window_itl_count=None if window is None else len(window),
        window_itl_ms_p50=None if window is None else to_ms(percentile(window, 50)),
        window_itl_ms_p95=None if window is None else to_ms(percentile(window, 95)),
        long_ok=None if long is None else long.ok,
        long_ttft_ms=None if long is None else to_ms(long.ttft_s),
        long_prompt_tokens=None if long is None else long.prompt_tokens,
        long_cached_tokens=None if long is None else long.cached_tokens,
        long_offset_ms=to_ms(offset),
        long_done_before_chats=done_before,
    )


@dataclass(frozen=True)
class Criterion:
    name: str  # "a", "b", "c during", "c after"
    what: str  # the quantity, in words
    detail: str  # how it was computed, with its inputs
    value: float | None  # the ratio, or the TTFT in ms for (b)
    limit: float
    passed: bool | None  # None when an input is absent


def _check(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _num(value: float | None, digits: int = 1) -> str:
    return "absent" if value is None else f"{value:.{digits}f}"


def _long_criterion(name: str, where: str, stats: ScenarioStats, alone: float | None) -> Criterion:
    value = ratio(stats.long_ttft_ms, alone)
    return Criterion(
        name,
        f"long TTFT {where} / long TTFT alone",
        f"{_num(stats.long_ttft_ms)} ms / {_num(alone)} ms = {_num(value, 2)}",
        value,
        LONG_TTFT_RATIO_LIMIT,
        _check(value, LONG_TTFT_RATIO_LIMIT),
    )


def verdict(stats: Mapping[str, ScenarioStats]) -> tuple[Criterion, ...]:
    """Issue 16's acceptance criteria from the four scenarios' figures."""
    alone, during, after = stats[CHATS_ALONE], stats[LONG_DURING], stats[CHATS_AFTER]
    itl = ratio(during.window_itl_ms_p95, alone.itl_ms_p95)
    slowest = after.chat_ttft_ms_max
    if after.chats_failed:
        slowest = None  # a chat without a first token cannot pass
    limit_ms = CHAT_TTFT_LIMIT_S * 1000.0
    long_alone = stats[LONG_ALONE].long_ttft_ms
    return (
        Criterion(
            "a",
            "chats' ITL p95 during the long prompt / alone",
            f"{_num(during.window_itl_ms_p95)} ms / {_num(alone.itl_ms_p95)} ms = {_num(itl, 2)}",
            itl,
            ITL_RATIO_LIMIT,
            _check(itl, ITL_RATIO_LIMIT),
        ),
        Criterion(
            "b",
            "slowest chat TTFT after the long prompt",
            f"max of {after.chats - after.chats_failed} of {after.chats} chats = "
            f"{_num(slowest)} ms",
            slowest,
            limit_ms,
            _check(slowest, limit_ms),
        ),
        _long_criterion("c during", "during chats", during, long_alone),
        _long_criterion("c after", "before chats", after, long_alone),
    )


# --- text ----------------------------------------------------------------------------------

_COLUMNS = (
    ("scenario", 18),
    ("chats ok", 8),
    ("TTFT max", 9),
    ("ITL p50", 8),
    ("ITL p95", 8),
    ("win p50", 8),
    ("win p95", 8),
    ("win n", 6),
    ("long TTFT", 10),
    ("long tok", 8),
)


def _row(cells: Sequence[str]) -> str:
    parts = [
        cell.ljust(width) if not i else cell.rjust(width)
        for i, ((_, width), cell) in enumerate(zip(_COLUMNS, cells, strict=True))
    ]
    return " ".join(parts).rstrip()


def _cell(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _table_row(s: ScenarioStats) -> str:
    chats = f"{s.chats - s.chats_failed}/{s.chats}" if s.chats else "-"
    long_ttft = "failed" if s.long_ok is False else _cell(s.long_ttft_ms)
    return _row(
        [
            s.scenario, chats, _cell(s.chat_ttft_ms_max), _cell(s.itl_ms_p50),
            _cell(s.itl_ms_p95), _cell(s.window_itl_ms_p50), _cell(s.window_itl_ms_p95),
            _cell(s.window_itl_count), long_ttft, _cell(s.long_prompt_tokens),
        ]
    )  # fmt: skip


def _server_line(server: ServerLevelStatus | None) -> str:
    if server is None or not server.available:
        return f"server status absent ({'no answer' if server is None else server.error})"
    running = "absent" if server.num_running_peak is None else str(server.num_running_peak)
    return f"runtime mode {server.mode or 'absent'}, peak num_running {running}"


def _notes(cfg: BenchConfig, stats: Mapping[str, ScenarioStats]) -> list[str]:
    during, after = stats[LONG_DURING], stats[CHATS_AFTER]
    notes = []
    if during.long_offset_ms is not None:
        notes.append(
            f"long during chats: long prompt sent {during.long_offset_ms:.1f} ms after the chats "
            f"(once each had a token); {_cell(during.window_itl_count)} chat ITL values after it"
        )
    if during.window_itl_count == 0 and during.chats_failed < during.chats:
        notes.append(
            "note: the chats ended before the long prompt was sent, so (a) has no data; "
            "raise --max-tokens"
        )
    ttfts = ", ".join(_cell(t) for t in after.chat_ttft_ms)
    notes.append(
        f"chats after long: sent {cfg.interference_delay:g} s after the long prompt; "
        f"chat TTFTs (ms): {ttfts or '-'}"
    )
    if after.long_done_before_chats:
        notes.append(
            "note: the long prompt had finished before the chats were sent, so they did not "
            "overlap; lower --interference-delay or raise --long-prompt-tokens"
        )
    return notes


def _verdict_line(c: Criterion) -> str:
    mark = "n/a" if c.passed is None else ("PASS" if c.passed else "FAIL")
    limit = f"<= {c.limit:g} ms" if c.name == "b" else f"<= {c.limit:g}"
    return f"({c.name}) {c.what}: {c.detail}  ({limit})  {mark}"


def render(
    cfg: BenchConfig,
    stats: Mapping[str, ScenarioStats],
    criteria: Sequence[Criterion],
    requests: Sequence[InterferenceRequest],
    server: ServerLevelStatus | None,
) -> str:
    """The human-readable lines of the interference probe."""
    long_alone = stats[LONG_ALONE]
    lines = [
        f"interference probe: K={cfg.interference_probe} chats of ~{cfg.prompt_tokens} tokens "
        f"(max_tokens {cfg.max_tokens}), long prompt ~{cfg.long_prompt_tokens} tokens "
        f"(usage.prompt_tokens {_cell(long_alone.long_prompt_tokens)}, "
        f"max_tokens {LONG_MAX_TOKENS}), {_server_line(server)}",
        "times in ms; ITL pools every chat's inter-token latencies; win = ITL values closed "
        "after the long prompt was sent",
        _row([name for name, _ in _COLUMNS]),
        _row(["-" * width for _, width in _COLUMNS]),
        *(_table_row(stats[name]) for name in SCENARIOS),
        *_notes(cfg, stats),
        "verdict (issue 16 acceptance criteria):",
        *(_verdict_line(c) for c in criteria),
    ]
    lines += [
        f"{r.scenario}: {r.role} {r.index} failed: {r.error}" if r.role == "chat" else
        f"{r.scenario}: long prompt failed: {r.error}"
        for r in requests
        if not r.ok
    ]  # fmt: skip
    return "\n".join(lines) + "\n"
