"""Prefix-cache probes: a few hand-placed requests instead of a concurrency sweep.

``--ttft-probe``: one long prompt sent cold (unique text), then again (warm:
the whole prompt is cached) and once more with a new short suffix (prefix
hit); reports the three TTFTs and warm/cold, prefix/cold.

``--blocks-probe K``: one request with the shared system prompt alone, then K
concurrent ones sharing it with distinct suffixes, while /v1/status is polled
for the peak ``cache.blocks_used``. With prefix sharing, K requests should hold
the prefix blocks once plus K private tails::

    expected = prefix_blocks + K × suffix_blocks
    prefix_blocks = floor(cached_tokens / block_size)      blocks shared by reference
    suffix_blocks = ceil((prompt + output − prefix_blocks × block_size) / block_size)

A block the prompt matches only in part is copied on write, so it belongs to
each request's tail, hence floor for the prefix. A ratio near 1 means the
prefix is held once; near (prefix + suffix) / (prefix / K + suffix) means
every request holds its own copy.

Both print text lines and JSON lines (to ``--json`` PATH when given, else stdout).
Prompts carry a fresh nonce per run, so a rerun cannot find them cached.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from vllm_mlx.bench.client import make_client, stream_messages
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.prompts import make_prompts
from vllm_mlx.bench.report import append_json
from vllm_mlx.bench.runner import json_meta, log_failures, output_stream
from vllm_mlx.bench.stats import RequestRecord, ratio, to_ms
from vllm_mlx.bench.status import (
    ServerLevelStatus,
    StatusMonitor,
    make_status_client,
    status_url,
)
from vllm_mlx.bench.workload import Message, system_message, user_message

PROBE_SUFFIX_TOKENS = 16  # words appended to the TTFT probe's prompt for the prefix hit
PROBE_POLL_S = 0.05  # /v1/status poll interval of the blocks probe (requests are short)
TTFT_KINDS = ("cold", "warm", "prefix")


def run_probe(cfg: BenchConfig) -> int:
    """Run the probe ``cfg`` asks for, print text and JSON lines; 1 if a request failed."""
    nonce = str(time.time_ns())
    if cfg.probe == "ttft":
        text, rows, ok = asyncio.run(_ttft_probe(cfg, nonce))
    else:
        text, rows, ok = asyncio.run(_blocks_probe(cfg, nonce))
    out = output_stream(cfg)
    out.write(text)
    out.flush()
    meta = json_meta(cfg, "server")
    if cfg.probe == "ttft":
        meta["max_tokens"] = 1
    lines = [_json({"probe": cfg.probe, **row, **meta}) for row in rows]
    append_json(cfg.json_path or "-", lines)
    return 0 if ok else 1


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True)


@dataclass(frozen=True)
class ProbeRequest:
    kind: str  # "cold", "warm", "prefix" (ttft probe); "single", "concurrent" (blocks)
    round: int  # 1-based repetition
    ok: bool
    error: str | None
    ttft_ms: float | None
    prompt_tokens: int | None  # usage.prompt_tokens
    output_tokens: int
    cached_tokens: int | None  # usage.prompt_tokens_details.cached_tokens

    @classmethod
    def of(cls, kind: str, round_no: int, record: RequestRecord) -> ProbeRequest:
        return cls(
            kind, round_no, record.ok, record.error, to_ms(record.ttft_s), record.prompt_tokens,
            record.output_tokens, record.cached_tokens,
        )  # fmt: skip


# --- TTFT probe ----------------------------------------------------------------------------


def ttft_probe_texts(cfg: BenchConfig, nonce: str) -> tuple[str, str]:
    """(long prompt, the same prompt + a short new suffix), unique for ``nonce``."""
    base = make_prompts(1, cfg.prompt_tokens, cfg.seed, salt=f"ttft-probe:{nonce}")[0]
    tail = make_prompts(1, PROBE_SUFFIX_TOKENS, cfg.seed, salt=f"ttft-suffix:{nonce}")[0]
    return base, f"{base} {tail}"


async def _ttft_round(
    client: httpx.AsyncClient, cfg: BenchConfig, nonce: str, round_no: int
) -> list[ProbeRequest]:
    """Cold, warm and prefix-hit requests of one round, one after another."""
    base, extended = ttft_probe_texts(cfg, f"{nonce}:{round_no}")
    found = []
    for kind, text in zip(TTFT_KINDS, (base, base, extended), strict=True):
        messages = [user_message(text)]
        reply = await stream_messages(
            client, cfg, messages, f"bench-ttft-{kind}-{round_no}", max_tokens=1
        )
        found.append(ProbeRequest.of(kind, round_no, reply.record))
    return found


async def _ttft_probe(cfg: BenchConfig, nonce: str) -> tuple[str, list[dict[str, Any]], bool]:
    """Run the TTFT probe's rounds; returns (text, JSON rows, every request ok)."""
    rounds = cfg.num_prompts or 1
    requests: list[ProbeRequest] = []
    async with make_client(cfg, 1) as client, make_status_client(cfg) as status_client:
        monitor = StatusMonitor(status_client, status_url(cfg.base_url), cfg.status_interval)
        async with monitor:
            for round_no in range(1, rounds + 1):
                requests += await _ttft_round(client, cfg, nonce, round_no)
    summary = ttft_summary(requests)
    summary["server"] = _server_json(monitor.result)
    rows = [asdict(r) for r in requests] + [{"kind": "summary", **summary}]
    text = render_ttft(cfg, requests, summary, monitor.result)
    return text, rows, all(r.ok for r in requests)


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def ttft_summary(requests: Sequence[ProbeRequest]) -> dict[str, Any]:
    """Median TTFT, prompt and cached tokens per kind, and the warm/cold, prefix/cold ratios."""
    summary: dict[str, Any] = {"rounds": max((r.round for r in requests), default=0)}
    for kind in TTFT_KINDS:
        group = [r for r in requests if r.kind == kind and r.ok]
        summary[f"{kind}_ttft_ms"] = _median([r.ttft_ms for r in group])
        summary[f"{kind}_prompt_tokens"] = _median([r.prompt_tokens for r in group])
        summary[f"{kind}_cached_tokens"] = _median([r.cached_tokens for r in group])
    summary["warm_cold_ratio"] = ratio(summary["warm_ttft_ms"], summary["cold_ttft_ms"])
    summary["prefix_cold_ratio"] = ratio(summary["prefix_ttft_ms"], summary["cold_ttft_ms"])
    return summary


def _num(value: float | None, digits: int = 1) -> str:
    return "absent" if value is None else f"{value:.{digits}f}"


def _tok(value: float | None) -> str:
    return "absent" if value is None else f"{value:.0f}"


def _tokens(value: float | None) -> str:
    return "absent" if value is None else f"{value:.0f} tok"


def render_ttft(
    cfg: BenchConfig,
    requests: Sequence[ProbeRequest],
    summary: dict[str, Any],
    server: ServerLevelStatus | None,
) -> str:
    """The human-readable lines of the TTFT probe."""
    lines = [
        f"TTFT probe: ~{cfg.prompt_tokens}-token prompt + {PROBE_SUFFIX_TOKENS}-token suffix, "
        f"max_tokens 1, {summary['rounds']} round(s) (medians), {_server_line(server)}"
    ]
    for kind in TTFT_KINDS:
        ttft = summary[f"{kind}_ttft_ms"]
        lines.append(
            f"{kind + ' TTFT:':13}{'absent' if ttft is None else f'{ttft:.1f} ms':>12}   "
            f"(prompt {_tokens(summary[f'{kind}_prompt_tokens'])}, "
            f"cached {_tokens(summary[f'{kind}_cached_tokens'])})"
        )
    lines.append(f"{'warm/cold:':13}{_num(summary['warm_cold_ratio'], 3):>12}")
    lines.append(f"{'prefix/cold:':13}{_num(summary['prefix_cold_ratio'], 3):>12}")
    lines += [
        f"{r.kind} request of round {r.round} failed: {r.error}" for r in requests if not r.ok
    ]
    return "\n".join(lines) + "\n"


def _server_line(server: ServerLevelStatus | None) -> str:
    if server is None or not server.available:
        reason = "no answer" if server is None else server.error
        return f"server status absent ({reason})"
    before, after = server.hit_rate_before, server.hit_rate_after
    hit = "absent" if after is None else f"{_num(before, 4)} before, {_num(after, 4)} after"
    return f"runtime mode {server.mode or 'absent'}, cache.hit_rate {hit}"


def _server_json(server: ServerLevelStatus | None) -> dict[str, Any] | None:
    return None if server is None else asdict(server)


# --- blocks probe --------------------------------------------------------------------------


@dataclass(frozen=True)
class BlocksEstimate:
    """Inputs and result of "blocks held by K concurrent ÷ (1 prefix + K suffixes)"."""

    k: int  # concurrent requests
    block_size: int | None  # cache.block_size
    blocks_held: int | None  # peak cache.blocks_used while the K ran, minus the idle count
    prefix_tokens: int | None  # shared prompt tokens (see prefix_source)
    prefix_source: str  # "usage cached_tokens" or "estimate (--shared-prefix-tokens)"
    prefix_blocks: int | None  # floor(prefix_tokens / block_size)
    tokens_per_request: int | None  # max prompt + output tokens of the K requests (usage)
    suffix_tokens: int | None  # tokens_per_request − prefix_blocks × block_size
    suffix_blocks: int | None  # ceil(suffix_tokens / block_size)
    expected_blocks: int | None  # prefix_blocks + K × suffix_blocks
    ratio: float | None  # blocks_held / expected_blocks


def estimate_blocks(
    k: int,
    block_size: int | None,
    blocks_held: int | None,
    concurrent: Sequence[ProbeRequest],
    shared_prefix_tokens: int,
) -> BlocksEstimate:
    """The blocks-probe arithmetic (pure, so the formula is testable on its own)."""
    ok = [r for r in concurrent if r.ok]
    cached = [r.cached_tokens for r in ok if r.cached_tokens]
    prefix, source = (min(cached), "usage cached_tokens") if cached else (None, "")
    if prefix is None:
        prefix, source = shared_prefix_tokens, "estimate (--shared-prefix-tokens)"
    totals = [r.prompt_tokens + r.output_tokens for r in ok if r.prompt_tokens is not None]
    per_request = max(totals) if totals else None
    if not block_size or per_request is None:
        return BlocksEstimate(
            k, block_size, blocks_held, prefix, source, None, per_request, None, None, None, None
        )
    prefix_blocks = prefix // block_size
    suffix_tokens = per_request - prefix_blocks * block_size
    suffix_blocks = math.ceil(suffix_tokens / block_size)
    expected = prefix_blocks + k * suffix_blocks
    return BlocksEstimate(
        k, block_size, blocks_held, prefix, source, prefix_blocks, per_request,
        suffix_tokens, suffix_blocks, expected, ratio(blocks_held, expected),
    )  # fmt: skip


def blocks_probe_messages(cfg: BenchConfig, nonce: str) -> list[list[Message]]:
    """K + 1 requests: one shared system prompt, each with its own user suffix."""
    system = make_prompts(1, cfg.shared_prefix_tokens, cfg.seed, salt=f"blocks-system:{nonce}")
    suffixes = make_prompts(cfg.blocks_probe + 1, cfg.prompt_tokens, cfg.seed, f"blocks:{nonce}")
    return [[system_message(system[0]), user_message(text)] for text in suffixes]


async def _monitored(
    cfg: BenchConfig,
    client: httpx.AsyncClient,
    status_client: httpx.AsyncClient,
    batch: Sequence[list[Message]],
    kind: str,
) -> tuple[list[ProbeRequest], ServerLevelStatus | None]:
    """Send ``batch`` at once while polling /v1/status fast."""
    interval = min(cfg.status_interval, PROBE_POLL_S)
    monitor = StatusMonitor(status_client, status_url(cfg.base_url), interval)
    async with monitor:
        replies = await asyncio.gather(
            *(
                stream_messages(client, cfg, m, f"bench-blocks-{kind}-{n}")
                for n, m in enumerate(batch)
            )
        )
    log_failures([r.record for r in replies], f"blocks probe ({kind})")
    return [ProbeRequest.of(kind, 1, r.record) for r in replies], monitor.result


@dataclass(frozen=True)
class BlocksObservation:
    """What the blocks probe saw: the requests and /v1/status around each phase."""

    single: tuple[ProbeRequest, ...]  # the one request sent alone
    concurrent: tuple[ProbeRequest, ...]  # the K requests sent together
    alone: ServerLevelStatus | None  # status around the single request
    together: ServerLevelStatus | None  # status around the K requests

    @property
    def idle_blocks(self) -> int | None:
        """cache.blocks_used before the probe (other clients' requests; normally 0)."""
        return None if self.alone is None else self.alone.blocks_used_before

    def held(self, status: ServerLevelStatus | None) -> int | None:
        """Peak cache.blocks_used of one phase, less the idle count."""
        if status is None or status.blocks_used_peak is None:
            return None
        return status.blocks_used_peak - (self.idle_blocks or 0)

    @property
    def block_size(self) -> int | None:
        return next((s.block_size for s in (self.together, self.alone) if s and s.block_size), None)


async def _blocks_probe(cfg: BenchConfig, nonce: str) -> tuple[str, list[dict[str, Any]], bool]:
    """One request alone, then K together; returns (text, JSON rows, every request ok)."""
    batches = blocks_probe_messages(cfg, nonce)
    async with (
        make_client(cfg, cfg.blocks_probe) as client,
        make_status_client(cfg) as status_client,
    ):
        single, alone = await _monitored(cfg, client, status_client, batches[:1], "single")
        concurrent, together = await _monitored(
            cfg, client, status_client, batches[1:], "concurrent"
        )
    seen = BlocksObservation(tuple(single), tuple(concurrent), alone, together)
    estimate = estimate_blocks(
        cfg.blocks_probe, seen.block_size, seen.held(together), concurrent, cfg.shared_prefix_tokens
    )
    summary = {
        "kind": "summary", **asdict(estimate), "single_blocks_held": seen.held(alone),
        "idle_blocks_used": seen.idle_blocks, "server_single": _server_json(alone),
        "server_concurrent": _server_json(together),
    }  # fmt: skip
    rows = [asdict(r) for r in (*single, *concurrent)] + [summary]
    text = render_blocks(cfg, estimate, seen)
    return text, rows, all(r.ok for r in (*single, *concurrent))


def _range(values: Sequence[int | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "absent"
    lo, hi = min(known), max(known)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _requests_line(requests: Sequence[ProbeRequest]) -> str:
    ok = [r for r in requests if r.ok]
    return (
        f"prompt {_range([r.prompt_tokens for r in ok])} tok, "
        f"output {_range([r.output_tokens for r in ok])} tok, "
        f"cached {_range([r.cached_tokens for r in ok])} tok"
    )


def _single_computed(single: Sequence[ProbeRequest], block_size: int | None) -> str:
    """ceil((prompt + output) / block_size) of the single request, as text."""
    r = single[0] if single else None
    if r is None or not r.ok or r.prompt_tokens is None or not block_size:
        return "absent"
    total = r.prompt_tokens + r.output_tokens
    return f"ceil({total} / {block_size}) = {math.ceil(total / block_size)}"


def _formula_lines(e: BlocksEstimate) -> list[str]:
    """The arithmetic of the estimate, one input per line."""
    bs, pb = e.block_size, e.prefix_blocks
    if bs is None or pb is None or e.suffix_blocks is None:
        why = "cache.block_size" if not bs else "usage.prompt_tokens"
        return [
            f"prefix_tokens = {_tok(e.prefix_tokens)} ({e.prefix_source})",
            f"blocks held by {e.k} concurrent ÷ (1 prefix + {e.k} suffixes) = absent "
            f"(no {why} from the server)",
        ]
    return [
        f"prefix_tokens = {e.prefix_tokens} ({e.prefix_source})",
        f"prefix_blocks = floor({e.prefix_tokens} / {bs}) = {pb}"
        "   (a partly matched block is copied on write: it counts per request)",
        f"suffix_tokens = max(prompt + output) - prefix_blocks x {bs} = "
        f"{e.tokens_per_request} - {pb * bs} = {e.suffix_tokens}",
        f"suffix_blocks = ceil({e.suffix_tokens} / {bs}) = {e.suffix_blocks}",
        f"blocks held by {e.k} concurrent ÷ (1 prefix + {e.k} suffixes) = "
        f"{_tok(e.blocks_held)} / ({pb} + {e.k} x {e.suffix_blocks} = {e.expected_blocks}) "
        f"= {_num(e.ratio, 2)}",
    ]


def render_blocks(cfg: BenchConfig, e: BlocksEstimate, seen: BlocksObservation) -> str:
    """The human-readable lines of the blocks probe."""
    together = seen.together
    total = None if together is None else together.blocks_total
    running = None if together is None else together.num_running_peak
    lines = [
        f"blocks probe: K={e.k} concurrent requests sharing a ~{cfg.shared_prefix_tokens}-token "
        f"system prompt, ~{cfg.prompt_tokens}-token user suffixes, max_tokens {cfg.max_tokens}",
        f"server: {_server_line(together)}, block_size {_tok(e.block_size)}, "
        f"blocks_total {_tok(total)}, blocks_used before {_tok(seen.idle_blocks)}",
        f"single request alone: held {_tok(seen.held(seen.alone))} blocks at peak "
        f"({_requests_line(seen.single)}; computed {_single_computed(seen.single, e.block_size)})",
        f"{e.k} concurrent: held {_tok(e.blocks_held)} blocks at peak, peak num_running "
        f"{_tok(running)} ({_requests_line(seen.concurrent)})",
        *_formula_lines(e),
    ]
    if running is not None and running < e.k:
        lines.append(
            f"note: at most {running} of {e.k} requests ran at once, so the peak does not "
            "hold all K (server batch limit or memory)"
        )
    failed = [r for r in (*seen.single, *seen.concurrent) if not r.ok]
    lines += [f"{r.kind} request failed: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"
