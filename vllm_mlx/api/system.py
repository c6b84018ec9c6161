"""Protocol-neutral routes: health, models, capabilities and status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from vllm_mlx.api.context import ServingContext, serving
from vllm_mlx.api.errors import OpenAIErrorBody
from vllm_mlx.api.openai import protocol
from vllm_mlx.api.openapi import response_docs
from vllm_mlx.api.requests import server_defaults
from vllm_mlx.api.schemas import Capabilities, Health, ModelList
from vllm_mlx.api.tools_report import ToolsReport
from vllm_mlx.embeddings.service import EmbeddingService

router = APIRouter()

REPETITION_MODES = ["safe", "strict"]  # detector modes; --repetition-policy also takes off
DIAGNOSTIC_LEVELS = ["basic", "deep"]


@router.get(
    "/health",
    responses={
        200: {"model": Health},
        503: {"model": Health, "description": "Loading, unhealthy or draining"},
    },
)
async def health(request: Request) -> JSONResponse:
    ctx: ServingContext | None = getattr(request.app.state, "serving", None)
    if ctx is None:
        return JSONResponse({"status": "loading", "model_loaded": False}, status_code=503)
    if not ctx.engine.alive:
        body = {"status": "unhealthy", "model_loaded": True, "error": "engine stopped"}
        return JSONResponse(body, status_code=503)
    drain = getattr(request.app.state, "drain", None)
    if drain is not None and drain.draining:  # out of the load balancer's rotation
        body = {"status": "draining", "model_loaded": True, "model": ctx.model_id}
        return JSONResponse(body, status_code=503)
    body = {"status": "healthy", "model_loaded": True, "model": ctx.model_id}
    if ctx.memory is not None:
        body["memory_pressure"] = ctx.memory.summary()["pressure"]
    mcp: ToolsReport | None = getattr(request.app.state, "tools_report", None)
    if mcp is not None:  # informative only: a failed MCP server leaves the server healthy
        body["mcp"] = mcp.summary()
    return JSONResponse(body)


@router.get("/v1/models", response_model=None, responses=response_docs(ModelList, OpenAIErrorBody))
async def models(request: Request) -> dict[str, Any]:
    ctx = serving(request)
    created = int(ctx.started_at)
    cards = [_card(name, created, ctx.context_length) for name in ctx.model_names]
    embeddings: EmbeddingService | None = getattr(request.app.state, "embeddings", None)
    if embeddings is not None and embeddings.unavailable is None:
        cards.append(_card(embeddings.model_id, created, embeddings.window))
    return {"object": "list", "data": cards}


def _card(name: str, created: int, window: int) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm-mlx",
        "max_model_len": window,
    }


def capabilities_body(
    ctx: ServingContext,
    device: dict[str, str],
    embeddings: EmbeddingService | None = None,
    mcp: ToolsReport | None = None,
) -> dict[str, Any]:
    policy, engine = ctx.policy, ctx.engine_config
    sampling = server_defaults(ctx)
    override = "trusted-only"
    if not policy.api_key and policy.trust_requests_when_auth_disabled:
        override = "allowed"
    return {
        "object": "capabilities",
        "model": ctx.model_id,
        "device": device,
        "modalities": {
            "text": True,
            "image": ctx.vision is not None,
            "audio": False,
            "video": False,
        },
        "endpoints": [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1/responses",
            "/v1/models",
            "/v1/capabilities",
            "/v1/status",
            "/health",
            "/health/diagnostics",
            *(mcp.endpoints if mcp is not None else ()),
        ],
        "features": {
            "streaming": True,
            "stream_usage": True,
            "logprobs": True,
            "seed": True,
            "n": True,
            "tool_calling": True,
            "auto_tool_choice": ctx.agent.enable_auto_tool_choice,
            "tool_call_parser": ctx.agent.tool_call_parser,
            "reasoning": ctx.agent.reasoning_parser is not None,
            "reasoning_parser": ctx.agent.reasoning_parser,
            "structured_output": ctx.constraints is not None,
            "anthropic_messages": True,
            "embeddings": embeddings is not None and embeddings.unavailable is None,
            "embedding_model": embeddings.model_id if embeddings is not None else None,
            "request_diagnostics": True,
            "strict_model_id": policy.strict_model_id,
            "deterministic": policy.deterministic,
            "mcp": mcp is not None,
            "mcp_tools": mcp.tool_count() if mcp is not None else 0,
        },
        "diagnostics": {"levels": DIAGNOSTIC_LEVELS, "default_level": "basic"},
        "runtime": _runtime(ctx),
        "limits": {
            "max_context_tokens": ctx.model_context_length,
            "effective_context_tokens": ctx.context_length,
            "default_max_tokens": engine.default_max_tokens,
            "max_n": protocol.MAX_N,
            "max_stop_sequences": protocol.MAX_STOP_SEQUENCES,
            "max_top_logprobs": protocol.MAX_TOP_LOGPROBS,
            "max_queue": policy.max_queue,
            "max_request_bytes": int(policy.max_request_mb * 2**20),
            "timeout_seconds": policy.timeout_s,
        },
        "policies": {
            "repetition": {
                "default_mode": policy.repetition_policy,
                "supported_modes": REPETITION_MODES,
                "request_override": override,
            },
            "memory": {
                "action": policy.memory.action.value,
                "warn_threshold_percent": policy.memory.warn_pct,
                "limit_threshold_percent": policy.memory.limit_pct,
                "monitor_interval_seconds": policy.memory.interval_s,
            },
            "shutdown_timeout_seconds": policy.shutdown_timeout_s,
        },
        "auth": {"enabled": policy.api_key is not None, "schemes": ["bearer", "x-api-key"]},
        "rate_limit": {
            "enabled": policy.rate_limit_per_min > 0,
            "requests_per_minute": policy.rate_limit_per_min,
        },
        "defaults": {
            "timeout_seconds": policy.timeout_s,
            "max_tokens": engine.default_max_tokens,
            # --default-temperature / --default-top-p, else the model's generation_config.json;
            # null: the protocol's own default.
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "stream_interval": engine.stream_interval,
        },
    }


def _runtime(ctx: ServingContext) -> dict[str, Any]:
    """How requests share the engine: the mode, determinism and the divergence probe."""
    divergence = ctx.policy.divergence
    return {
        "mode": ctx.engine_config.runtime_mode.value,
        "deterministic": ctx.policy.deterministic,
        "batch_divergence_monitor": {
            "enabled": divergence.enabled,
            "interval_seconds": divergence.interval_s,
            "threshold": divergence.threshold,
            "action": divergence.action.value,
        },
    }


@router.get(
    "/v1/capabilities",
    response_model=None,
    responses=response_docs(Capabilities, OpenAIErrorBody),
)
async def capabilities(request: Request) -> dict[str, Any]:
    ctx = serving(request)
    state = request.app.state
    embeddings = getattr(state, "embeddings", None)
    return capabilities_body(ctx, state.device, embeddings, getattr(state, "tools_report", None))
