"""The additive ``diagnostics`` object of ``include_diagnostics=true`` responses.

Observability signals, not quality scores: ``basic`` summarises context use and
visual load; ``deep`` adds a snapshot of the runtime's state.
"""

from __future__ import annotations

from typing import Any

from vllm_mlx.api.context import ServingContext


def diagnostics_body(
    ctx: ServingContext,
    level: str,
    prompt_tokens: int,
    completion_tokens: int,
    max_tokens_factor: float = 1.0,
) -> dict[str, Any]:
    """``max_tokens_factor`` < 1: the request's max_tokens was cut under memory pressure."""
    window = ctx.context_length
    used = prompt_tokens + completion_tokens
    body: dict[str, Any] = {
        "level": level,
        "context": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "context_window_tokens": window,
            "utilization": round(used / window, 4) if window else None,
        },
        "visual_load": {"images": 0, "image_tokens": 0},
    }
    if max_tokens_factor < 1.0 and ctx.memory is not None:
        body["memory"] = {**ctx.memory.summary(), "max_tokens_factor": max_tokens_factor}
    if level == "deep":
        stats = ctx.engine.stats()
        body["runtime"] = {
            "num_running": stats.num_running,
            "num_waiting": stats.num_waiting,
            "steps_executed": stats.steps_executed,
            "active_memory_bytes": stats.active_memory_bytes,
            "peak_memory_bytes": stats.peak_memory_bytes,
            "deterministic": ctx.policy.deterministic,
        }
        if ctx.divergence is not None:
            body["runtime"]["batch_divergence"] = ctx.divergence.summary()
    return body
