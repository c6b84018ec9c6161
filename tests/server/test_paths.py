"""The one list of inference routes every middleware reads."""

from __future__ import annotations

from vllm_mlx.server.middleware.paths import INFERENCE_PATHS, RATE_LIMITED_PATHS


def test_responses_is_an_inference_route() -> None:
    assert "/v1/responses" in INFERENCE_PATHS


def test_rate_limit_also_counts_token_counting_and_mcp_but_never_health() -> None:
    assert INFERENCE_PATHS < RATE_LIMITED_PATHS
    extra = {"/v1/messages/count_tokens", "/v1/mcp/execute"}
    assert extra == RATE_LIMITED_PATHS - INFERENCE_PATHS
    assert "/health" not in RATE_LIMITED_PATHS
