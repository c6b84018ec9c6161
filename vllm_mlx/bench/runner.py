"""The concurrency sweep against a server, and the orchestration of one bench run."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from tqdm import tqdm

from vllm_mlx.bench.client import make_client, stream_chat
from vllm_mlx.bench.config import BASELINE_LABEL, SERVER_LABEL, BenchConfig
from vllm_mlx.bench.prompts import make_prompts
from vllm_mlx.bench.report import append_json, ratio_line, render_table, to_json_line
from vllm_mlx.bench.stats import LevelStats, RequestRecord, summarize

logger = logging.getLogger("vllm_mlx.bench")

MAX_LOGGED_ERRORS = 3  # distinct failure messages logged per level


def level_prompts(cfg: BenchConfig, level: int) -> list[str]:
    """The measured prompts of one level (the baseline uses level 1's).

    Each level has its own set so a level cannot reuse the KV prefix cache
    that an earlier level filled.
    """
    return make_prompts(cfg.prompts_for(level), cfg.prompt_tokens, cfg.seed, salt=f"c{level}")


def warmup_prompts(cfg: BenchConfig) -> list[str]:
    """Unmeasured prompts, distinct from every measured set."""
    return make_prompts(cfg.warmup, cfg.prompt_tokens, cfg.seed, salt="warmup")


async def run_requests(
    client: httpx.AsyncClient,
    cfg: BenchConfig,
    prompts: Sequence[str],
    concurrency: int,
    tag: str,
) -> tuple[list[RequestRecord], float]:
    """Send every prompt, keeping ``concurrency`` requests in flight until all completed.

    Returns the records (in completion order) and the wall time in seconds.
    """
    records: list[RequestRecord] = []
    pending = iter(range(len(prompts)))  # shared by the workers: each takes the next index
    bar = tqdm(total=len(prompts), desc=tag, file=sys.stderr, disable=not cfg.progress)

    async def worker() -> None:
        for i in pending:
            records.append(await stream_chat(client, cfg, prompts[i], f"bench-{tag}-{i}"))
            bar.update(1)

    start = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(prompts))):
                group.create_task(worker())
    finally:
        bar.close()
    return records, time.perf_counter() - start


def log_failures(records: Sequence[RequestRecord], tag: str) -> None:
    """Log the distinct reasons of failed requests (a few), so a dead server is obvious."""
    errors = [r.error or "unknown error" for r in records if not r.ok]
    if not errors:
        return
    distinct = list(dict.fromkeys(errors))[:MAX_LOGGED_ERRORS]
    logger.warning("%s: %d of %d requests failed", tag, len(errors), len(records))
    for message in distinct:
        logger.warning("%s:   %s", tag, message)


async def run_sweep(
    cfg: BenchConfig, on_level: Callable[[LevelStats], None] | None = None
) -> list[LevelStats]:
    """Warm up, then run every concurrency level against the server, in order."""
    results: list[LevelStats] = []
    async with make_client(cfg, max(cfg.sweep)) as client:
        if cfg.warmup:
            prompts = warmup_prompts(cfg)
            records, _ = await run_requests(
                client, cfg, prompts, min(len(prompts), max(cfg.sweep)), "warmup"
            )
            log_failures(records, "warmup")
        for level in cfg.sweep:
            tag = f"c{level}"
            records, wall_s = await run_requests(client, cfg, level_prompts(cfg, level), level, tag)
            log_failures(records, tag)
            stats = summarize(SERVER_LABEL, level, records, wall_s)
            results.append(stats)
            if on_level is not None:
                on_level(stats)
    return results


def json_meta(cfg: BenchConfig, label: str) -> dict[str, Any]:
    """Run settings stored beside each level's statistics in JSON output."""
    baseline = label == BASELINE_LABEL
    return {
        "base_url": None if baseline else cfg.base_url,
        "model": (cfg.baseline_model or "embedded default") if baseline else cfg.model,
        "prompt_tokens_target": cfg.prompt_tokens,
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "timestamp": time.time(),
    }


def execute(cfg: BenchConfig) -> int:
    """Run the baseline and/or the server sweep, print the results; 1 if any request failed."""
    # With JSON on stdout, the human-readable table moves to stderr.
    out = sys.stderr if cfg.json_path == "-" else sys.stdout
    results: list[LevelStats] = []

    def emit(stats: LevelStats) -> None:
        results.append(stats)
        logger.info(
            "%s at concurrency %d: %.2f output tok/s, %d of %d failed",
            stats.label, stats.concurrency, stats.output_tok_s, stats.failures, stats.requests,
        )  # fmt: skip
        if cfg.json_path is not None:
            append_json(cfg.json_path, [to_json_line(stats, json_meta(cfg, stats.label))])

    baseline = None
    if cfg.runs_baseline:
        from vllm_mlx.bench.baseline import run_baseline  # imports MLX: only when asked

        baseline = run_baseline(cfg)
        emit(baseline)
    if cfg.runs_server:
        asyncio.run(run_sweep(cfg, emit))
    out.write(render_table(results))
    if cfg.compare_baseline:
        server_c1 = next(
            (s for s in results if s.label == SERVER_LABEL and s.concurrency == 1), None
        )
        out.write(ratio_line(server_c1, baseline))
    out.flush()
    return 1 if any(s.failures for s in results) else 0
