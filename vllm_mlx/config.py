"""Frozen configuration read once by the CLI and passed down to every layer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DType(StrEnum):
    """Weight dtype policy. ``auto`` picks per device; ``keep`` loads as stored."""

    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    KEEP = "keep"


@dataclass(frozen=True)
class ModelConfig:
    model: str | None  # path, .gguf file, HF repo id, or None for the embedded default
    dtype: DType = DType.AUTO  # weight dtype policy
    served_name: str | None = None  # id shown by /v1/models (defaults to the resolved id)


@dataclass(frozen=True)
class EngineConfig:
    default_max_tokens: int = 32768  # used when a request names none (clamped to context)
    default_temperature: float | None = None  # applied when a request omits temperature
    default_top_p: float | None = None  # applied when a request omits top_p
    stream_interval: int = 1  # tokens per streamed chunk
    prefill_chunk_tokens: int = 512  # prompt tokens per forward pass during prefill
    effective_context_tokens: int | None = None  # override of the model's context window


@dataclass(frozen=True)
class PolicyConfig:
    timeout_s: float = 300.0  # wall-clock limit of one request
    strict_model_id: bool = False  # unknown model ids are a 404 when set
    api_key: str | None = None  # reported in capabilities; auth middleware arrives later
    rate_limit_per_min: int = 0  # reported in capabilities; 0 = disabled
    repetition_policy: str = "safe"  # default repetition detector mode
    trust_requests_when_auth_disabled: bool = False  # allow request-level policy override


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    model: ModelConfig = ModelConfig(model=None)
    engine: EngineConfig = EngineConfig()
    policy: PolicyConfig = PolicyConfig()
