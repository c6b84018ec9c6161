"""Response bodies of the protocol-neutral routes, as /openapi.json documents them.

The routes build plain dicts; these models only describe them. Nested sections
that grow with the server's options stay open objects.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class Health(BaseModel):
    status: str  # healthy (200); loading, unhealthy or draining (503)
    model_loaded: bool
    model: str | None = None
    error: str | None = None
    mcp: dict[str, int] | None = None  # with --mcp-config: servers, connected, tools


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int  # the effective context window in tokens


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Capabilities(BaseModel):
    object: Literal["capabilities"]
    model: str
    device: dict[str, Any]
    modalities: dict[str, bool]
    endpoints: list[str]
    features: dict[str, Any]
    diagnostics: dict[str, Any]
    runtime: dict[str, Any]  # mode, deterministic, batch_divergence_monitor
    limits: dict[str, Any]
    policies: dict[str, Any]
    auth: dict[str, Any]
    rate_limit: dict[str, Any]
    defaults: dict[str, Any]


class RequestProgress(BaseModel):
    request_id: str
    phase: str  # queued, prefill or generation
    tokens_per_second: float | None
    ttft_s: float | None
    recent_itl_ms: float | None
    recent_itl_max_ms: float | None
    prompt_tokens: int
    computed_tokens: int
    progress: float
    cache_hit_type: str
    cached_tokens: int
    generated_tokens: int
    max_tokens: int


class ServerStatus(BaseModel):
    status: str
    model: str
    uptime_s: float
    steps_executed: int
    num_running: int
    num_waiting: int
    total_requests_processed: int
    total_prompt_tokens: int
    total_completion_tokens: int
    metal: dict[str, float]
    device: dict[str, Any]
    cache: dict[str, Any]
    runtime: dict[str, Any]
    mcp: list[dict[str, Any]] | None = None  # with --mcp-config: each server's state
    requests: list[RequestProgress]
