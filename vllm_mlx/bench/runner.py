"""The concurrency sweep against a server, and the orchestration of one bench run."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TextIO

import httpx
from tqdm import tqdm

from vllm_mlx.bench.client import make_client, stream_messages
from vllm_mlx.bench.config import BASELINE_LABEL, SERVER_LABEL, BenchConfig
from vllm_mlx.bench.prompts import make_prompts
from vllm_mlx.bench.stats import LevelStats, RequestRecord, summarize
from vllm_mlx.bench.status import StatusMonitor, make_status_client, status_url
from vllm_mlx.bench.workload import (
    Conversation,
    Message,
    assistant_message,
    level_conversations,
    warmup_conversations,
)

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
    """Send every prompt as a single user message; see :func:`run_conversations`."""
    conversations = [Conversation(system=None, user_turns=(p,)) for p in prompts]
    return await run_conversations(client, cfg, conversations, concurrency, tag)


async def run_conversations(
    client: httpx.AsyncClient,
    cfg: BenchConfig,
    conversations: Sequence[Conversation],
    concurrency: int,
    tag: str,
) -> tuple[list[RequestRecord], float]:
    """Run every conversation, keeping ``concurrency`` of them in flight until all completed.

    A conversation's turns go one after another; each is one request. Returns
    the records (in completion order) and the wall time in seconds.
    """
    records: list[RequestRecord] = []
    pending = iter(range(len(conversations)))  # shared by the workers: each takes the next
    total = sum(len(c.user_turns) for c in conversations)
    bar = tqdm(total=total, desc=tag, file=sys.stderr, disable=not cfg.progress)

    async def worker() -> None:
        for i in pending:
            name = f"bench-{tag}-{i}"
            await _converse(client, cfg, conversations[i], name, records, bar.update)

    start = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(conversations))):
                group.create_task(worker())
    finally:
        bar.close()
    return records, time.perf_counter() - start


async def _converse(
    client: httpx.AsyncClient,
    cfg: BenchConfig,
    conversation: Conversation,
    name: str,
    records: list[RequestRecord],
    advance: Callable[[int], object],
) -> None:
    """Run one conversation's turns in order; a failed turn ends the conversation."""
    history: list[Message] = []
    turns = len(conversation.user_turns)
    for turn in range(turns):
        messages = conversation.messages(history, turn)
        request_id = name if turns == 1 else f"{name}-t{turn + 1}"
        reply = await stream_messages(client, cfg, messages, request_id)
        records.append(replace(reply.record, turn=turn + 1))
        advance(1)
        if not reply.record.ok:
            advance(turns - turn - 1)  # later turns need this reply: they are not sent
            return
        history = [*history, messages[-1], assistant_message(reply.text)]


def log_failures(records: Sequence[RequestRecord], tag: str) -> None:
    """Log the distinct reasons of failed requests (a few), so a dead server is obvious."""
    errors = [r.error or "unknown error" for r in records if not r.ok]
    if not errors:
        return
    distinct = list(dict.fromkeys(errors))[:MAX_LOGGED_ERRORS]
    logger.warning("%s: %d of %d requests failed", tag, len(errors), len(records))
    for message in distinct:
        logger.warning("%s:   %s", tag, message)


class DirectTimer(Protocol):
    """Times one prompt in-process (the mlx-lm baseline)."""

    def time_one(self, prompt: str) -> RequestRecord: ...


async def run_sweep(
    cfg: BenchConfig, on_level: Callable[[LevelStats], None] | None = None
) -> list[LevelStats]:
    """Warm up, then run every concurrency level against the server, in order."""
    results: list[LevelStats] = []
    async with (
        make_client(cfg, max(cfg.sweep)) as client,
        make_status_client(cfg) as status_client,
    ):
        await _warm_up(client, cfg, max(cfg.sweep))
        for level in cfg.sweep:
            stats = await _run_level(client, status_client, cfg, level)
            results.append(stats)
            if on_level is not None:
                on_level(stats)
    return results


async def run_paired(
    cfg: BenchConfig, direct: DirectTimer, on_level: Callable[[LevelStats], None]
) -> None:
    """Warm the server up, then run :func:`run_paired_level`; baseline reported first."""
    async with make_client(cfg, 1) as client, make_status_client(cfg) as status_client:
        await _warm_up(client, cfg, 1)
        for stats in await run_paired_level(client, status_client, cfg, direct):
            on_level(stats)


async def _warm_up(client: httpx.AsyncClient, cfg: BenchConfig, concurrency: int) -> None:
    if cfg.warmup:
        warmup = warmup_conversations(cfg)
        records, _ = await run_conversations(
            client, cfg, warmup, min(len(warmup), concurrency), "warmup"
        )
        log_failures(records, "warmup")


async def run_paired_level(
    client: httpx.AsyncClient,
    status_client: httpx.AsyncClient,
    cfg: BenchConfig,
    direct: DirectTimer,
) -> tuple[LevelStats, LevelStats]:
    """Concurrency 1, alternating: each prompt through ``direct``, then through the server.

    A shared machine drifts in speed over minutes; alternating request by
    request exposes both sides to the same drift, so their ratio holds still.
    Each side's wall time is the sum of its own requests' times.
    """
    prompts = level_prompts(cfg, 1)
    direct_records: list[RequestRecord] = []
    server_records: list[RequestRecord] = []
    direct_s = server_s = 0.0
    monitor = StatusMonitor(status_client, status_url(cfg.base_url), cfg.status_interval)
    bar = tqdm(total=len(prompts), desc="c1 paired", file=sys.stderr, disable=not cfg.progress)
    async with monitor:
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            direct_records.append(direct.time_one(prompt))  # blocks the loop: nothing else runs
            middle = time.perf_counter()
            user = Conversation(system=None, user_turns=(prompt,))
            await _converse(client, cfg, user, f"bench-c1-{i}", server_records, lambda _: None)
            direct_s += middle - start
            server_s += time.perf_counter() - middle
            bar.update(1)
    bar.close()
    log_failures(direct_records, "baseline")
    log_failures(server_records, "c1")
    server = summarize(SERVER_LABEL, 1, server_records, server_s)
    return (
        summarize(BASELINE_LABEL, 1, direct_records, direct_s),
        replace(server, server=monitor.result),
    )


async def _run_level(
    client: httpx.AsyncClient, status_client: httpx.AsyncClient, cfg: BenchConfig, level: int
) -> LevelStats:
    """One level, with /v1/status read before, polled during and read after it."""
    tag = f"c{level}"
    monitor = StatusMonitor(status_client, status_url(cfg.base_url), cfg.status_interval)
    async with monitor:
        records, wall_s = await run_conversations(
            client, cfg, level_conversations(cfg, level), level, tag
        )
    log_failures(records, tag)
    return replace(summarize(SERVER_LABEL, level, records, wall_s), server=monitor.result)


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
        "shared_prefix_tokens_target": cfg.shared_prefix_tokens,
        "multi_turn": cfg.multi_turn,
        "timestamp": time.time(),
    }


def output_stream(cfg: BenchConfig) -> TextIO:
    """Where the human-readable text goes: stderr when JSON lines take stdout."""
    return sys.stderr if cfg.json_path == "-" else sys.stdout
