"""The async facade that routes call; bridges asyncio to the engine thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.config import EngineConfig
from vllm_mlx.engine.core import EngineCore
from vllm_mlx.engine.types import (
    EngineError,
    EngineEvent,
    EngineStats,
    Finished,
    GenerationRequest,
    RequestObserver,
)


class EngineClient:
    """Submit requests and consume their events from the asyncio side."""

    def __init__(
        self,
        load: Callable[[], LoadedModel],
        config: EngineConfig,
        observer: RequestObserver | None = None,
    ) -> None:
        """``observer`` is called on the engine thread once per retired sequence."""
        self._core = EngineCore(load, config, observer)

    async def start(self) -> LoadedModel:
        """Start the engine thread and wait for the model to load."""
        self._core.start()
        return await asyncio.to_thread(self._core.wait_ready)

    async def stop(self) -> None:
        await asyncio.to_thread(self._core.stop)

    @property
    def alive(self) -> bool:
        return self._core.alive

    def stats(self) -> EngineStats:
        return self._core.stats()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        """Stream a request's events; closing the iterator early aborts it."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[EngineEvent] = asyncio.Queue()

        def sink(event: EngineEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        self._core.submit(request, sink)
        done = False
        try:
            while not done:
                event = await events.get()
                done = isinstance(event, Finished | EngineError)
                yield event
        finally:
            if not done:
                self._core.abort(request.request_id)

    def abort(self, request_id: str) -> None:
        self._core.abort(request_id)

    def fail_all(self, message: str) -> None:
        self._core.fail_all(message)
