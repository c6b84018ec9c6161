"""FastAPI factory: wires middleware, routes and the engine's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI

from vllm_mlx import __version__
from vllm_mlx.api import health_diagnostics, status, system
from vllm_mlx.api.anthropic import routes as anthropic_routes
from vllm_mlx.api.constraints import ConstraintBuilder
from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import install_error_handlers
from vllm_mlx.api.openai import routes as openai_routes
from vllm_mlx.api.openai.responses import routes as responses_routes
from vllm_mlx.api.openapi import install_openapi
from vllm_mlx.backend.facts import model_facts
from vllm_mlx.backend.memory import device_info
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.config import RuntimeMode, ServerConfig
from vllm_mlx.embeddings.service import EmbeddingService, build_service
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.mcp import routes as mcp_routes
from vllm_mlx.mcp.types import ToolService
from vllm_mlx.server.drain import Drain
from vllm_mlx.server.middleware.admission import AdmissionMiddleware, Gate, queue_gate
from vllm_mlx.server.middleware.auth import APIKeyMiddleware
from vllm_mlx.server.middleware.body_limit import BodyLimitMiddleware
from vllm_mlx.server.middleware.concurrency import ConcurrencyCounter, ConcurrencyMiddleware
from vllm_mlx.server.middleware.rate_limit import RateLimiter, RateLimitMiddleware
from vllm_mlx.server.middleware.request_id import RequestIdMiddleware
from vllm_mlx.server.middleware.serialize import SerializeMiddleware
from vllm_mlx.server.monitors import metrics
from vllm_mlx.server.monitors.divergence import DivergenceMonitor, EngineProbe
from vllm_mlx.server.monitors.memory import MemoryMonitor, process_usage

log = logging.getLogger(__name__)

Loader = Callable[[], LoadedModel]


def default_loader(config: ServerConfig) -> Loader:
    from vllm_mlx.backend.loader import load_model

    return lambda: load_model(config.model)


def create_app(config: ServerConfig, load: Loader | None = None) -> FastAPI:
    """Build the app; the model loads in the engine thread during startup."""
    server_metrics = metrics.ServerMetrics()
    engine = EngineClient(load or default_loader(config), config.engine, server_metrics.observe)
    memory = MemoryMonitor(config.policy.memory, process_usage(lambda: _device_bytes(engine)))
    divergence = _divergence_monitor(config)
    embeddings = build_service(config.embedding, config.model.dtype)
    mcp = _mcp_service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = await engine.start()
        try:
            await _start_embeddings(embeddings)
        except BaseException:
            await engine.stop()
            raise
        app.state.device = {**asdict(device_info()), "dtype": loaded.dtype, "blas": loaded.blas}
        tokenizer = Tokenizer(loaded.tokenizer, loaded.eos_token_ids)
        app.state.model_facts = model_facts(loaded)  # before serving: diagnostics read it
        app.state.serving = ServingContext(
            engine=engine,
            tokenizer=tokenizer,
            model_id=config.model.served_name or loaded.model_id,
            model_context_length=loaded.context_length,
            engine_config=config.engine,
            policy=config.policy,
            agent=config.agent,
            constraints=ConstraintBuilder(tokenizer, loaded.vocab_size),
            memory=memory,
            divergence=divergence,
            bind_host=config.host,
            longest_token_chars=tokenizer.longest_token_chars,
            model_sampling=loaded.sampling,
            vision=loaded.prompter,
        )
        serving = app.state.serving
        server_metrics.bind(
            metrics.Binding(serving.model_id, serving.context_length, engine.stats, app.state)
        )
        log.info("serving %s (context %d tokens)", loaded.model_id, loaded.context_length)
        memory.sample()  # /v1/status and the gates have a reading from the first request
        tasks = [asyncio.create_task(memory.run(), name="memory-monitor")]
        if divergence is not None and divergence.batching:
            divergence.bind(_engine_probe(config, engine, tokenizer))
            tasks.append(asyncio.create_task(divergence.run(), name="divergence-monitor"))
        try:
            await _start_mcp(mcp)  # inside: a start cut short still ends its children
            yield
        finally:
            await _stop_mcp(mcp)  # first: its children outlive no failing engine stop
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(embeddings.worker.stop)
            await engine.stop()

    app = FastAPI(title="vllm-mlx", version=__version__, lifespan=lifespan)
    app.state.concurrency = ConcurrencyCounter()
    app.state.metrics = server_metrics
    app.state.memory_monitor = memory
    app.state.divergence = divergence  # None when --batch-divergence-monitor is off
    app.state.drain = Drain()
    app.state.embeddings = embeddings
    app.state.mcp = mcp  # None without --mcp-config: the MCP routes answer 503
    app.state.tools_report = None if mcp is None else mcp_routes.MCPReport(mcp)
    app.state.timeout_s = config.policy.timeout_s
    per_min = config.policy.rate_limit_per_min
    limiter = RateLimiter(per_min) if per_min > 0 else None
    app.state.rate_limiter = limiter  # None when off; the metrics read .refused
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(system.router)
    app.include_router(health_diagnostics.router)
    app.include_router(status.router)
    app.include_router(metrics.router)
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(responses_routes.router)
    # Documented only when served: unconfigured, every MCP route is a 503.
    app.include_router(mcp_routes.router, include_in_schema=config.mcp is not None)
    # Innermost: a request waiting for its turn counts as in flight (and queued).
    app.add_middleware(SerializeMiddleware, active=_serialized(config, divergence))
    app.add_middleware(ConcurrencyMiddleware, counter=app.state.concurrency)
    app.add_middleware(AdmissionMiddleware, gates=_gates(config, app, engine))
    if limiter is not None:
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    if config.policy.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=config.policy.api_key)
    app.add_middleware(BodyLimitMiddleware, max_mb=config.policy.max_request_mb)
    app.add_middleware(RequestIdMiddleware)  # outermost: even a 401 carries the id
    return app


async def _start_embeddings(service: EmbeddingService) -> None:
    """A pinned --embedding-model loads now (a bad one fails the start); the default waits."""
    if service.pinned:
        model = await service.worker.model()
        log.info("embeddings: serving %s", model.model_id)
    elif service.unavailable is None:
        log.info("embeddings: %s loads on first use", service.model_id)
    else:
        log.warning("embeddings unavailable: %s", service.unavailable)


def _mcp_service(config: ServerConfig) -> ToolService | None:
    if config.mcp is None:
        return None
    from vllm_mlx.mcp.manager import MCPManager  # the MCP SDK loads only when configured

    return MCPManager(config.mcp)


async def _start_mcp(mcp: ToolService | None) -> None:
    """Connect the MCP servers; one that fails is reported on its route, never fatal."""
    if mcp is None:
        return
    try:
        await mcp.start()
    except Exception:
        log.exception("MCP: start failed; its routes report each server's state")
        return
    states = mcp.servers()
    connected = sum(1 for s in states if s.state == "connected")
    # The manager has logged each failure; this line is the start-up summary.
    log.info("MCP: %d of %d servers connected, %d tools", connected, len(states), len(mcp.tools()))


async def _stop_mcp(mcp: ToolService | None) -> None:
    if mcp is None:
        return
    try:
        await mcp.stop()
    except Exception:
        log.exception("MCP: stop failed")


def _divergence_monitor(config: ServerConfig) -> DivergenceMonitor | None:
    if not config.policy.divergence.enabled:
        return None
    batching = config.engine.runtime_mode is not RuntimeMode.SIMPLE
    if not batching:
        log.info("--batch-divergence-monitor: runtime mode simple never batches; no probes")
    return DivergenceMonitor(config.policy.divergence, batching)


def _engine_probe(config: ServerConfig, engine: EngineClient, tokenizer: Tokenizer) -> EngineProbe:
    # Enough sequences beside the probe that auto mode batches them.
    distractors = max(3, config.engine.runtime_mode_threshold - 1)
    return EngineProbe(engine, tokenizer, distractors, config.policy.timeout_s)


def _serialized(config: ServerConfig, divergence: DivergenceMonitor | None) -> Callable[[], bool]:
    """Whether tracked routes run one request at a time, asked per request."""
    if config.policy.deterministic:
        return lambda: True
    if divergence is None:
        return lambda: False
    return lambda: divergence.serializing


def _device_bytes(engine: EngineClient) -> int:
    stats = engine.stats()  # published by the engine thread: no MLX call from here
    return stats.active_memory_bytes + stats.cache_memory_bytes


def _gates(config: ServerConfig, app: FastAPI, engine: EngineClient) -> list[Gate]:
    """Why a new inference request may be refused, in the order they are asked."""
    gates: list[Gate] = [app.state.drain.refusal, app.state.memory_monitor.refusal]
    max_queue = config.policy.max_queue
    if max_queue is not None:
        counter: ConcurrencyCounter = app.state.concurrency

        def waiting() -> int:  # requests in flight over HTTP minus sequences running
            return max(0, counter.active - engine.stats().num_running)

        gates.append(queue_gate(max_queue, waiting))
    return gates
