"""The inference routes the middlewares watch, in one place.

Concurrency counting, request serialization and admission cover the routes that run
a model; the rate limiter also counts the per-call routes that cost work but never
generate (token counting, MCP tool calls).
"""

from __future__ import annotations

# Routes that run the model or the embedding model (exact paths, any method).
INFERENCE_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/messages",
        "/v1/embeddings",
        "/v1/responses",
    }
)

# What --rate-limit counts; /health and every other route never count.
RATE_LIMITED_PATHS = INFERENCE_PATHS | {"/v1/messages/count_tokens", "/v1/mcp/execute"}
