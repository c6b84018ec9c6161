"""FastAPI factory: wires middleware, routes and the engine's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI

from vllm_mlx import __version__
from vllm_mlx.api import system
from vllm_mlx.api.anthropic import routes as anthropic_routes
from vllm_mlx.api.constraints import ConstraintBuilder
from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import install_error_handlers
from vllm_mlx.api.openai import routes as openai_routes
from vllm_mlx.backend.memory import device_info
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.config import ServerConfig
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.server.middleware.auth import APIKeyMiddleware
from vllm_mlx.server.middleware.concurrency import ConcurrencyCounter, ConcurrencyMiddleware
from vllm_mlx.server.middleware.request_id import RequestIdMiddleware
from vllm_mlx.server.monitors import status

log = logging.getLogger(__name__)

Loader = Callable[[], LoadedModel]


def default_loader(config: ServerConfig) -> Loader:
    from vllm_mlx.backend.loader import load_model

    return lambda: load_model(config.model)


def create_app(config: ServerConfig, load: Loader | None = None) -> FastAPI:
    """Build the app; the model loads in the engine thread during startup."""
    engine = EngineClient(load or default_loader(config), config.engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = await engine.start()
        app.state.device = {**asdict(device_info()), "dtype": loaded.dtype, "blas": loaded.blas}
        tokenizer = Tokenizer(loaded.tokenizer, loaded.eos_token_ids)
        app.state.serving = ServingContext(
            engine=engine,
            tokenizer=tokenizer,
            model_id=config.model.served_name or loaded.model_id,
            model_context_length=loaded.context_length,
            engine_config=config.engine,
            policy=config.policy,
            agent=config.agent,
            constraints=ConstraintBuilder(tokenizer, loaded.vocab_size),
        )
        log.info("serving %s (context %d tokens)", loaded.model_id, loaded.context_length)
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="vllm-mlx", version=__version__, lifespan=lifespan)
    app.state.concurrency = ConcurrencyCounter()
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(status.router)
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)
    app.add_middleware(ConcurrencyMiddleware, counter=app.state.concurrency)
    if config.policy.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=config.policy.api_key)
    app.add_middleware(RequestIdMiddleware)  # outermost: even a 401 carries the id
    return app
