"""GET /v1/status: server-wide counters, device memory and per-request progress.

The engine publishes its counters (engine/stats.py); this route only shapes them.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from fastapi import APIRouter, Request

from vllm_mlx.api.context import ServingContext, serving
from vllm_mlx.api.diagnostics import divergence_summary
from vllm_mlx.api.errors import OpenAIErrorBody
from vllm_mlx.api.openapi import response_docs
from vllm_mlx.api.schemas import ServerStatus
from vllm_mlx.api.tools_report import ToolsReport
from vllm_mlx.engine.repetition import INTERVENING_MODES
from vllm_mlx.engine.types import EngineStats

router = APIRouter()


class _Concurrency(Protocol):
    """The app's in-flight counter (kept by the server's middleware, on app.state)."""

    active: int
    peak: int


_GB = 1024**3


@router.get(
    "/v1/status",
    response_model=None,
    responses=response_docs(ServerStatus, OpenAIErrorBody),
)
async def status(request: Request) -> dict[str, Any]:
    ctx = serving(request)
    stats = ctx.engine.stats()
    counter: _Concurrency = request.app.state.concurrency
    return {
        "status": "running",
        "model": ctx.model_id,
        "uptime_s": round(time.time() - ctx.started_at, 1),
        "steps_executed": stats.steps_executed,
        "num_running": stats.num_running,
        "num_waiting": stats.num_waiting,
        "total_requests_processed": stats.total_requests_processed,
        "total_prompt_tokens": stats.total_prompt_tokens,
        "total_completion_tokens": stats.total_completion_tokens,
        "metal": {
            "active_memory_gb": round(stats.active_memory_bytes / _GB, 3),
            "peak_memory_gb": round(stats.peak_memory_bytes / _GB, 3),
            "cache_memory_gb": round(stats.cache_memory_bytes / _GB, 3),
        },
        "device": request.app.state.device,
        "cache": {
            "type": f"{stats.cache.strategy}_cache",
            "entries": stats.cache.blocks_cached,
            "hit_rate": round(stats.cache.hit_rate, 4),
            "memory_mb": round(stats.cache.storage_bytes / 2**20, 1),
            "block_size": stats.cache.block_size,
            "blocks_total": stats.cache.blocks_total,
            "blocks_used": stats.cache.blocks_used,
            "blocks_free": stats.cache.blocks_free,
            "blocks_cached": stats.cache.blocks_cached,
            "vision": _vision_cache(stats),
        },
        "runtime": {
            "mode": stats.mode,
            "active_concurrency": counter.active,
            "peak_concurrency": counter.peak,
            "draining": request.app.state.drain.draining,
            "deterministic": ctx.policy.deterministic,
        },
        "memory": ctx.memory.summary() if ctx.memory is not None else None,
        "batch_divergence": divergence_summary(ctx),
        "repetition": _repetition(ctx, stats),
        "mcp": _mcp(request),
        "requests": [
            {
                "request_id": r.request_id,
                "phase": r.phase,
                "tokens_per_second": r.tokens_per_second,
                "ttft_s": r.ttft_s,
                "recent_itl_ms": _ms(r.recent_itl_s),
                "recent_itl_max_ms": _ms(r.recent_itl_max_s),
                "prompt_tokens": r.prompt_tokens,
                "computed_tokens": r.computed_tokens,
                "progress": round(r.progress, 4),
                "cache_hit_type": r.cache_hit_type,
                "cached_tokens": r.cached_tokens,
                "generated_tokens": r.generated_tokens,
                "max_tokens": r.max_tokens,
            }
            for r in stats.requests
        ],
    }


def _vision_cache(stats: EngineStats) -> dict[str, Any] | None:
    """The vision-tower output cache of a vision model; None for a text model."""
    vision = stats.vision_cache
    if vision is None:
        return None
    lookups = vision.hits + vision.misses
    return {
        "enabled": vision.enabled,
        "capacity": vision.capacity,
        "entries": vision.entries,
        "hits": vision.hits,
        "misses": vision.misses,
        "hit_rate": round(vision.hits / lookups, 4) if lookups else 0.0,
    }


def _repetition(ctx: ServingContext, stats: EngineStats) -> dict[str, Any]:
    """The loop detector's mode and counters since start (also read by /metrics)."""
    overrides = ctx.repetition_overrides
    return {
        "mode": ctx.policy.repetition_policy.value,
        "interventions": {m: stats.repetition_interventions.get(m, 0) for m in INTERVENING_MODES},
        "overrides_accepted": overrides.accepted,
        "overrides_denied": overrides.denied,
    }


def _mcp(request: Request) -> list[dict[str, Any]] | None:
    """Each MCP server's state; None without --mcp-config."""
    report: ToolsReport | None = getattr(request.app.state, "tools_report", None)
    return None if report is None else report.servers()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
