"""Typed helpers for clients that negotiate features with a vllm-mlx server."""

from __future__ import annotations

from typing import Any

import httpx


class CapabilitiesError(RuntimeError):
    """The server did not return a usable capabilities document."""


def fetch_capabilities(
    base_url: str, api_key: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """GET {base_url}/v1/capabilities (base_url with or without the /v1 suffix)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{root}/v1/capabilities", headers=headers, timeout=timeout)
        response.raise_for_status()
        caps = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise CapabilitiesError(f"cannot read capabilities from {root}: {exc}") from exc
    if not isinstance(caps, dict) or "features" not in caps:
        raise CapabilitiesError(f"{root}/v1/capabilities is not a capabilities document")
    return caps


def summarize_capabilities(caps: dict[str, Any]) -> dict[str, Any]:
    """The facts runtime tooling usually branches on, with safe defaults."""
    modalities = caps.get("modalities", {})
    features = caps.get("features", {})
    limits = caps.get("limits", {})
    diagnostics = caps.get("diagnostics", {})
    rate_limit = caps.get("rate_limit", {})
    policies = caps.get("policies", {})
    repetition = policies.get("repetition", {})
    return {
        "model": caps.get("model"),
        "supports_multimodal": any(v for k, v in modalities.items() if k != "text"),
        "supports_streaming": bool(features.get("streaming", False)),
        "supports_tools": bool(features.get("tool_calling", False)),
        "supports_reasoning": bool(features.get("reasoning", False)),
        "supports_structured_output": bool(features.get("structured_output", False)),
        "supports_request_diagnostics": bool(features.get("request_diagnostics", False)),
        "strict_model_id": bool(features.get("strict_model_id", False)),
        "diagnostics_levels": list(diagnostics.get("levels", [])),
        "max_context_tokens": limits.get("max_context_tokens"),
        "effective_context_tokens": limits.get("effective_context_tokens"),
        "auth_required": bool(caps.get("auth", {}).get("enabled", False)),
        "rate_limit_enabled": bool(rate_limit.get("enabled", False)),
        "rate_limit_requests_per_minute": rate_limit.get("requests_per_minute", 0),
        "repetition_default_mode": repetition.get("default_mode"),
        "repetition_supported_modes": list(repetition.get("supported_modes", [])),
        "repetition_request_override": repetition.get("request_override"),
        "memory_action": policies.get("memory", {}).get("action"),
        "max_queue": limits.get("max_queue"),
        "default_timeout_seconds": caps.get("defaults", {}).get("timeout_seconds"),
    }
