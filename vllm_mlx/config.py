"""Frozen configuration read once by the CLI and passed down to every layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    # Vision-tower outputs kept for repeated images (--mllm-vision-cache-size); 0: off.
    vision_cache_size: int = 100


class CacheStrategy(StrEnum):
    """How finished requests' KV blocks are kept for prefix reuse (README: strategies)."""

    AUTO = "auto"  # memory-aware
    MEMORY_AWARE = "memory-aware"  # pool sized from available memory, cached share capped
    PAGED = "paged"  # keep every cached block until its space is needed (LRU)
    LEGACY = "legacy"  # keep only the most recent request's blocks


class RuntimeMode(StrEnum):
    AUTO = "auto"  # batched while enough requests are in flight, else simple
    SIMPLE = "simple"  # one sequence at a time
    BATCHED = "batched"  # continuous batching


@dataclass(frozen=True)
class CacheConfig:
    strategy: CacheStrategy = CacheStrategy.AUTO
    block_size: int = 16  # tokens per KV block
    memory_mb: int | None = None  # KV pool budget; None = memory_percent of RAM
    memory_percent: float = 0.20  # share of system RAM for the KV pool


@dataclass(frozen=True)
class EngineConfig:
    default_max_tokens: int = 32768  # used when a request names none (clamped to context)
    default_temperature: float | None = None  # applied when a request omits temperature
    default_top_p: float | None = None  # applied when a request omits top_p
    stream_interval: int = 1  # tokens per streamed chunk
    prefill_chunk_tokens: int = 512  # tokens per step: decode rows plus one prefill chunk
    max_step_ms: float | None = None  # step time while streams decode; None = 2 decode passes
    effective_context_tokens: int | None = None  # override of the model's context window
    runtime_mode: RuntimeMode = RuntimeMode.AUTO
    runtime_mode_threshold: int = 2  # in-flight requests at which auto batches
    max_num_seqs: int = 64  # sequences decoded together in batched mode
    cache: CacheConfig = CacheConfig()


class RepetitionPolicy(StrEnum):
    """How eagerly the engine stops a sequence that loops (engine/repetition.py)."""

    SAFE = "safe"  # conservative: accidental degeneration only
    STRICT = "strict"  # aggressive: may stop repetition the prompt asked for
    OFF = "off"  # never intervene


class MemoryAction(StrEnum):
    """What the server does while memory pressure is critical."""

    WARN = "warn"  # log on each transition, keep serving
    REDUCE_CONTEXT = "reduce-context"  # halve max_tokens of new requests
    REJECT_NEW = "reject-new"  # 503 for new inference requests


@dataclass(frozen=True)
class MemoryConfig:
    warn_pct: float = 70.0  # share of system memory at which pressure is elevated
    limit_pct: float = 85.0  # share at which it is critical and the action applies
    action: MemoryAction = MemoryAction.WARN
    interval_s: float = 5.0  # seconds between readings


class DivergenceAction(StrEnum):
    """What the server does while the batch-divergence probe is below its threshold."""

    WARN = "warn"  # report it in status, diagnostics and metrics; keep batching
    SERIALIZE = "serialize"  # run tracked requests one at a time until a probe passes


@dataclass(frozen=True)
class DivergenceConfig:
    enabled: bool = False  # run the probe (--batch-divergence-monitor)
    interval_s: float = 300.0  # seconds between probes (one also runs at start)
    threshold: float = 0.95  # token agreement below which the status is a warning
    action: DivergenceAction = DivergenceAction.WARN


@dataclass(frozen=True)
class PolicyConfig:
    timeout_s: float = 300.0  # wall-clock limit of one request, arrival to last token
    strict_model_id: bool = False  # unknown model ids are a 404 when set
    api_key: str | None = None  # required on every route but /health when set
    rate_limit_per_min: int = 0  # requests per minute per client; 0 = disabled
    repetition_policy: RepetitionPolicy = RepetitionPolicy.SAFE  # server default mode
    trust_requests_when_auth_disabled: bool = False  # allow request-level policy override
    memory: MemoryConfig = MemoryConfig()
    max_queue: int | None = None  # waiting requests before new ones get 503; None = unbounded
    max_request_mb: float = 16.0  # larger request bodies get 413
    shutdown_timeout_s: float = 30.0  # grace for running requests on SIGTERM / SIGINT
    deterministic: bool = False  # greedy sampling, simple runtime, one tracked request at a time
    divergence: DivergenceConfig = DivergenceConfig()
    # Image URLs may name loopback/private hosts (trusted networks and tests only).
    allow_local_image_urls: bool = False


@dataclass(frozen=True)
class AgentConfig:
    """Output parsing for agents: tool calls and reasoning."""

    enable_auto_tool_choice: bool = False  # parse tool calls the model writes by itself
    tool_call_parser: str | None = None  # family name, see parsers/tools/registry.py
    reasoning_parser: str | None = None  # family name, see parsers/reasoning/registry.py
    max_thinking_tokens: int | None = None  # reasoning beyond this is routed to content


@dataclass(frozen=True)
class EmbeddingConfig:
    """/v1/embeddings: its model and how its worker batches (vllm_mlx/embeddings/)."""

    model: str | None = None  # folder or HF repo id, loaded at start; None = embedded default
    max_batch_size: int = 64  # rows per encoder forward pass
    max_batch_tokens: int = 16384  # rows x padded length per encoder forward pass


class MCPTransport(StrEnum):
    STDIO = "stdio"
    SSE = "sse"
    STREAMABLE_HTTP = "streamable-http"


@dataclass(frozen=True)
class MCPServerSpec:
    """One configured MCP server, validated by vllm_mlx/mcp/config.py."""

    name: str
    transport: MCPTransport
    command: str | None = None  # stdio: the program, run without a shell
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # added to a minimal safe env
    url: str | None = None  # sse / streamable-http
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    timeout_s: float | None = None  # per call; None: the config's default_timeout_s
    allowed_tools: frozenset[str] | None = None  # None: every tool the server lists
    blocked_tools: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MCPConfig:
    servers: tuple[MCPServerSpec, ...]
    max_tool_calls: int | None = None  # per tool per minute on /v1/mcp/execute; None: no cap
    default_timeout_s: float = 30.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    model: ModelConfig = ModelConfig(model=None)
    engine: EngineConfig = EngineConfig()
    policy: PolicyConfig = PolicyConfig()
    agent: AgentConfig = AgentConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    mcp: MCPConfig | None = None  # --mcp-config, validated; None: the MCP routes answer 503
