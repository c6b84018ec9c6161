"""GET /health/diagnostics: the checks of api/health_checks.py in one report.

``/health`` stays the cheap, always-open probe; this route renders the chat template
and reads files, and it needs the API key when ``--api-key`` is set. It answers 200
with the report whatever the verdict (503 only while the model loads).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from vllm_mlx.api import health_checks as checks
from vllm_mlx.api.context import ServingContext, serving
from vllm_mlx.api.errors import OpenAIErrorBody
from vllm_mlx.api.openapi import response_docs
from vllm_mlx.backend.facts import ModelFacts

router = APIRouter()


class DiagnosticCheck(BaseModel):
    status: Literal["pass", "warning", "fail"]
    detail: str
    metadata: dict[str, Any]


class HealthDiagnostics(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    model: str
    checks: dict[str, DiagnosticCheck]  # dtype, eos, memory, version, batch_invariance, ...
    memory: dict[str, Any] | None  # the memory monitor's summary; None: no monitor
    timestamp: str  # ISO 8601, UTC


def run_checks(
    ctx: ServingContext,
    facts: ModelFacts,
    memory: dict[str, object] | None,
    divergence: checks.DivergenceView | None,
) -> dict[str, checks.CheckResult]:
    return {
        "dtype": checks.check_dtype(facts),
        "eos": checks.check_eos(facts, ctx.tokenizer),
        "memory": checks.check_memory(memory),
        "version": checks.check_versions(checks.installed_versions(), facts),
        "batch_invariance": checks.check_batch_invariance(divergence),
        "repetition_policy": checks.check_repetition(ctx.policy.repetition_policy),
    }


@router.get(
    "/health/diagnostics",
    response_model=None,
    responses=response_docs(HealthDiagnostics, OpenAIErrorBody),
)
async def health_diagnostics(request: Request) -> dict[str, Any]:
    ctx = serving(request)
    facts: ModelFacts = request.app.state.model_facts
    memory = ctx.memory.summary() if ctx.memory is not None else None
    results = run_checks(ctx, facts, memory, getattr(request.app.state, "divergence", None))
    return {
        "status": checks.overall_status(results.values()),
        "model": ctx.model_id,
        "checks": {name: result.body() for name, result in results.items()},
        "memory": memory,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
