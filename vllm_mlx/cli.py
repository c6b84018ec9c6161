"""Command line: ``vllm-mlx serve`` and ``vllm-mlx bench``.

argparse stops here: every command turns its Namespace into frozen config.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vllm_mlx.config import (
    AgentConfig,
    CacheConfig,
    CacheStrategy,
    DivergenceAction,
    DivergenceConfig,
    DType,
    EmbeddingConfig,
    EngineConfig,
    MCPConfig,
    MemoryAction,
    MemoryConfig,
    ModelConfig,
    PolicyConfig,
    RepetitionPolicy,
    RuntimeMode,
    ServerConfig,
)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 1-65535, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _percent(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 100.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a percentage in (0, 100], got {text}")
    return value


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="local MLX dir, .gguf file or HF repo id; omit for the embedded "
                        "SmolLM2-135M-Instruct")  # fmt: skip
    p.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    p.add_argument("--localhost", action="store_true", help="bind 127.0.0.1; overrides --host")
    p.add_argument("--served-model-name", default=None, help="model id shown by /v1/models")
    p.add_argument("--dtype", choices=[d.value for d in DType], default="auto",
                   help="weight dtype; auto picks the fastest that fits the device "
                        "(float32 on CPU, stored dtype on GPU)")  # fmt: skip
    p.add_argument("--mllm-vision-cache-size", type=_positive_int, default=100,
                   help="vision models: image encodings kept for repeated images "
                        "(default 100)")  # fmt: skip
    p.add_argument("--disable-mllm-vision-cache", action="store_true",
                   help="vision models: encode every image again, even a repeated one")  # fmt: skip
    p.add_argument("--embedding-model", default=None,
                   help="embedding model for /v1/embeddings (local folder or HF repo id), "
                        "loaded at start; omit for the embedded all-MiniLM-L6-v2, loaded "
                        "on first use")  # fmt: skip
    p.add_argument("--api-key", default=None,
                   help="require this key (Bearer or x-api-key) on every route but /health; "
                        "also read from VLLM_MLX_API_KEY")  # fmt: skip
    p.add_argument("--timeout", type=_positive_float, default=300.0,
                   help="request timeout in seconds (default 300)")  # fmt: skip
    p.add_argument("--max-tokens", type=_positive_int, default=32768,
                   help="default max tokens when a request names none (default 32768)")  # fmt: skip
    p.add_argument("--default-temperature", type=_non_negative_float, default=None,
                   help="temperature when a request omits it (default: the model's "
                        "generation_config.json, else the protocol's)")  # fmt: skip
    p.add_argument("--default-top-p", type=_fraction, default=None,
                   help="top_p when a request omits it (default: the model's "
                        "generation_config.json, else the protocol's)")  # fmt: skip
    p.add_argument("--stream-interval", type=_positive_int, default=1,
                   help="tokens per streamed chunk (default 1)")  # fmt: skip
    p.add_argument("--strict-model-id", action="store_true",
                   help="404 for a model id other than the loaded one or 'default'")  # fmt: skip
    p.add_argument("--effective-context-tokens", type=_positive_int, default=None,
                   help="cap the context window below the model's (tokens): prompt plus "
                        "max_tokens beyond it is a 400")  # fmt: skip
    p.add_argument("--prefill-chunk-tokens", type=_positive_int, default=512,
                   help="prompt tokens per prefill forward pass (default 512)")  # fmt: skip
    p.add_argument("--max-step-ms", type=_positive_float, default=None,
                   help="while streams decode, keep each engine step (their decode pass plus "
                        "prefill chunks of other prompts) under this many ms, by the step "
                        "times measured so far (default: twice the decode pass)")  # fmt: skip
    g = p.add_argument_group("batching and KV cache")
    g.add_argument("--runtime-mode", choices=[m.value for m in RuntimeMode], default="auto",
                   help="simple: one request at a time; batched: continuous batching; "
                        "auto: batched at --runtime-mode-threshold requests in flight")  # fmt: skip
    g.add_argument("--runtime-mode-threshold", type=_positive_int, default=2,
                   help="in-flight requests at which auto mode batches (default 2)")  # fmt: skip
    g.add_argument("--continuous-batching", action="store_true",
                   help="legacy switch: same as --runtime-mode batched")  # fmt: skip
    g.add_argument("--max-num-seqs", type=_positive_int, default=64,
                   help="most sequences decoded together (default 64)")  # fmt: skip
    g.add_argument("--cache-strategy", choices=[s.value for s in CacheStrategy], default="auto",
                   help="prefix-cache retention policy (see README; default auto)")  # fmt: skip
    g.add_argument("--use-paged-cache", action="store_true",
                   help="legacy switch: same as --cache-strategy paged")  # fmt: skip
    g.add_argument("--cache-memory-mb", type=_positive_int, default=None,
                   help="KV pool budget in MiB (default: a share of RAM)")  # fmt: skip
    g.add_argument("--cache-memory-percent", type=_fraction, default=0.20,
                   help="fraction of system RAM for the KV pool (default 0.20)")  # fmt: skip
    g.add_argument("--block-size", type=_positive_int, default=16,
                   help="tokens per KV block (default 16)")  # fmt: skip
    a = p.add_argument_group("agents: tool calls and reasoning")
    a.add_argument("--enable-auto-tool-choice", action="store_true",
                   help="parse tool calls the model writes (tool_choice auto)")  # fmt: skip
    a.add_argument("--tool-call-parser", default=None, metavar="NAME",
                   help="tool-call format: auto, mistral, qwen, llama, hermes, deepseek, kimi, "
                        "granite, nemotron, xlam, functionary, glm47")  # fmt: skip
    a.add_argument("--reasoning-parser", default=None, metavar="NAME",
                   help="reasoning format: qwen3, deepseek_r1")  # fmt: skip
    a.add_argument("--max-thinking-tokens", type=_positive_int, default=None,
                   help="reasoning tokens before the rest is routed to content "
                        "(needs --reasoning-parser)")  # fmt: skip
    a.add_argument("--mcp-config", default=None, metavar="PATH",
                   help="MCP servers whose tools /v1/mcp/tools lists and /v1/mcp/execute "
                        "runs: a JSON or YAML file, Claude Desktop's {\"mcpServers\": ...} "
                        "or {\"servers\": ...}; a bad file stops the start")  # fmt: skip
    c = p.add_argument_group("production controls")
    c.add_argument("--rate-limit", type=_non_negative_int, default=0, metavar="N",
                   help="requests per minute per client (API key, else address); "
                        "0 = off")  # fmt: skip
    c.add_argument("--max-queue", type=_positive_int, default=None, metavar="N",
                   help="waiting requests before new ones get 503 "
                        "(default: unbounded)")  # fmt: skip
    c.add_argument("--max-request-mb", type=_positive_float, default=16.0, metavar="MB",
                   help="largest request body in MB; larger gets 413 (default 16)")  # fmt: skip
    c.add_argument("--shutdown-timeout", type=_non_negative_float, default=30.0, metavar="S",
                   help="seconds running requests may finish after SIGTERM/SIGINT "
                        "(default 30)")  # fmt: skip
    c.add_argument("--repetition-policy", choices=[m.value for m in RepetitionPolicy],
                   default="safe",
                   help="stop looping output: safe (conservative), strict, or off "
                        "(default safe)")  # fmt: skip
    c.add_argument("--trust-requests-when-auth-disabled", action="store_true",
                   help="honour repetition_policy_override from any client when there is no "
                        "--api-key")  # fmt: skip
    c.add_argument("--memory-warn-threshold", type=_percent, default=70.0, metavar="PCT",
                   help="memory use (%% of system memory) that counts as elevated "
                        "(default 70)")  # fmt: skip
    c.add_argument("--memory-limit-threshold", type=_percent, default=85.0, metavar="PCT",
                   help="memory use (%% of system memory) that is critical "
                        "(default 85)")  # fmt: skip
    c.add_argument("--memory-action", choices=[a.value for a in MemoryAction], default="warn",
                   help="while critical: warn, reduce-context (halve max_tokens of new "
                        "requests) or reject-new (503) (default warn)")  # fmt: skip
    c.add_argument("--memory-monitor-interval", type=_positive_float, default=5.0, metavar="S",
                   help="seconds between memory readings (default 5)")  # fmt: skip
    c.add_argument("--deterministic", action="store_true",
                   help="reproducible output: greedy sampling whatever the request asks, "
                        "runtime mode simple, one inference request at a time")  # fmt: skip
    c.add_argument("--batch-divergence-monitor", action="store_true",
                   help="probe whether batching changes greedy output (at start and every "
                        "--batch-divergence-interval)")  # fmt: skip
    c.add_argument("--batch-divergence-interval", type=_positive_float, default=300.0,
                   metavar="S", help="seconds between probes (default 300)")  # fmt: skip
    c.add_argument("--batch-divergence-threshold", type=_fraction, default=0.95,
                   metavar="F",
                   help="token agreement below which the status is a warning "
                        "(default 0.95)")  # fmt: skip
    c.add_argument("--batch-divergence-action", choices=[a.value for a in DivergenceAction],
                   default="warn",
                   help="below the threshold: warn (report only) or serialize (one "
                        "inference request at a time until a probe passes) "
                        "(default warn)")  # fmt: skip
    c.add_argument("--allow-local-image-urls", action="store_true",
                   help="let image URLs name loopback, private and link-local addresses "
                        "(refused by default: they reach the server's own network)")  # fmt: skip
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])  # fmt: skip


def serve_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1" if args.localhost else args.host,
        port=args.port,
        log_level=args.log_level,
        model=ModelConfig(
            args.model,
            DType(args.dtype),
            args.served_model_name,
            vision_cache_size=0 if args.disable_mllm_vision_cache else args.mllm_vision_cache_size,
        ),
        engine=EngineConfig(
            default_max_tokens=args.max_tokens,
            default_temperature=args.default_temperature,
            default_top_p=args.default_top_p,
            stream_interval=args.stream_interval,
            prefill_chunk_tokens=args.prefill_chunk_tokens,
            max_step_ms=args.max_step_ms,
            effective_context_tokens=args.effective_context_tokens,
            runtime_mode=runtime_mode(args),
            runtime_mode_threshold=args.runtime_mode_threshold,
            max_num_seqs=args.max_num_seqs,
            cache=CacheConfig(
                strategy=CacheStrategy.PAGED
                if args.use_paged_cache and args.cache_strategy == "auto"
                else CacheStrategy(args.cache_strategy),
                block_size=args.block_size,
                memory_mb=args.cache_memory_mb,
                memory_percent=args.cache_memory_percent,
            ),
        ),
        policy=PolicyConfig(
            timeout_s=args.timeout,
            strict_model_id=args.strict_model_id,
            api_key=args.api_key or os.environ.get("VLLM_MLX_API_KEY") or None,
            rate_limit_per_min=args.rate_limit,
            repetition_policy=RepetitionPolicy(args.repetition_policy),
            trust_requests_when_auth_disabled=args.trust_requests_when_auth_disabled,
            memory=memory_config(args),
            max_queue=args.max_queue,
            max_request_mb=args.max_request_mb,
            shutdown_timeout_s=args.shutdown_timeout,
            deterministic=args.deterministic,
            divergence=DivergenceConfig(
                enabled=args.batch_divergence_monitor,
                interval_s=args.batch_divergence_interval,
                threshold=args.batch_divergence_threshold,
                action=DivergenceAction(args.batch_divergence_action),
            ),
            allow_local_image_urls=args.allow_local_image_urls,
        ),
        agent=agent_config(args),
        embedding=EmbeddingConfig(model=args.embedding_model),
        mcp=mcp_config(args.mcp_config),
    )


def runtime_mode(args: argparse.Namespace) -> RuntimeMode:
    """--deterministic forces simple: a sequence never shares a batch."""
    mode = RuntimeMode.BATCHED if args.continuous_batching else RuntimeMode(args.runtime_mode)
    if args.deterministic:
        if mode is RuntimeMode.BATCHED:
            logging.getLogger(__name__).warning(
                "--deterministic: runtime mode simple (not %s)", mode.value
            )
        return RuntimeMode.SIMPLE
    return mode


def memory_config(args: argparse.Namespace) -> MemoryConfig:
    if args.memory_warn_threshold > args.memory_limit_threshold:
        raise SystemExit("--memory-warn-threshold must not exceed --memory-limit-threshold")
    return MemoryConfig(
        warn_pct=args.memory_warn_threshold,
        limit_pct=args.memory_limit_threshold,
        action=MemoryAction(args.memory_action),
        interval_s=args.memory_monitor_interval,
    )


def agent_config(args: argparse.Namespace) -> AgentConfig:
    from vllm_mlx.parsers.reasoning.registry import reasoning_parser_names
    from vllm_mlx.parsers.tools.registry import tool_parser_names

    if args.tool_call_parser and args.tool_call_parser not in tool_parser_names():
        raise SystemExit(f"--tool-call-parser must be one of {', '.join(tool_parser_names())}")
    if args.reasoning_parser and args.reasoning_parser not in reasoning_parser_names():
        names = ", ".join(reasoning_parser_names())
        raise SystemExit(f"--reasoning-parser must be one of {names}")
    if args.max_thinking_tokens is not None and not args.reasoning_parser:
        raise SystemExit("--max-thinking-tokens needs --reasoning-parser")
    if args.enable_auto_tool_choice and not args.tool_call_parser:
        raise SystemExit("--enable-auto-tool-choice needs --tool-call-parser")
    return AgentConfig(
        enable_auto_tool_choice=args.enable_auto_tool_choice,
        tool_call_parser=args.tool_call_parser,
        reasoning_parser=args.reasoning_parser,
        max_thinking_tokens=args.max_thinking_tokens,
    )


def mcp_config(path: str | None) -> MCPConfig | None:
    """--mcp-config read now: a bad file is one line before the model loads."""
    if path is None:
        return None
    from vllm_mlx.mcp.config import MCPConfigError, load_config

    try:
        return load_config(path)
    except MCPConfigError as exc:
        one_line = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise SystemExit(f"--mcp-config: {one_line}") from None  # names the file


def run_serve(config: ServerConfig) -> int:
    from vllm_mlx.backend.loader import LoaderError, resolve_model
    from vllm_mlx.server.listen import ListenError, bind, serve

    log = logging.getLogger(__name__)
    try:
        # The address first: a taken port is one line now, not after the model loads.
        sock = bind(config.host, config.port)
    except ListenError as exc:
        log.error("%s", exc)
        return 1
    try:
        # Resolve (and import or download) up front, so a bad model id is one clear line.
        resolve_model(config.model.model)
    except LoaderError as exc:
        sock.close()
        log.error("%s", exc)
        return 2
    serve(config, sock)
    # Done and logged. The engine thread's MLX thread-locals are torn down after the
    # thread has joined; when that overlaps interpreter finalization the process aborts
    # ("terminate called without an active exception"), so leave without finalizing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def build_parser() -> argparse.ArgumentParser:
    from vllm_mlx.bench import add_bench_arguments

    parser = argparse.ArgumentParser(prog="vllm-mlx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model over the OpenAI API")
    add_serve_arguments(serve)
    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible server")
    add_bench_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    # An optimized BLAS must be loaded before anything imports mlx.
    from vllm_mlx.backend.blas import preload_blas

    blas = preload_blas()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger(__name__).info("BLAS: %s", blas)
    if args.command == "serve":
        return run_serve(serve_config(args))
    from vllm_mlx.bench import run_bench

    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
