"""Shared fixtures: tiny local models and real servers started on free ports."""

# OpenBLAS must be loaded before anything imports mlx (see SPEC "Devices").
try:
    from vllm_mlx.backend.blas import preload_blas
except ImportError:
    pass
else:
    preload_blas()

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import LiveServer, run_server
from tests.fixtures.tiny_models import build_tiny_model

TINY_LLAMA = "tiny-llama"  # launch_server(model=TINY_LLAMA) serves the tiny llama fixture

LaunchServer = Callable[..., LiveServer]


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def tiny_llama_long_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny llama whose window (32768) is long enough to outlast a 1 s timeout."""
    out = tmp_path_factory.mktemp("models") / "tiny-llama-long"
    return build_tiny_model(out, "llama", max_position_embeddings=32768)


@pytest.fixture(scope="session")
def launch_server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_llama_path: Path,
) -> Iterator[LaunchServer]:
    """Start (or reuse) a real server: ``launch_server("--timeout", "1", model=...)``.

    ``model`` is ``TINY_LLAMA`` (default), a path (e.g. ``tiny_llama_long_path``)
    or repo id, or ``None`` for the embedded default model. Servers with the same model and
    arguments are shared for the whole session and stopped at its end.
    """
    servers: dict[tuple[str | None, tuple[str, ...]], LiveServer] = {}
    with ExitStack() as stack:

        def launch(
            *extra_args: str,
            model: str | Path | None = TINY_LLAMA,
            startup_timeout_s: float = 120.0,
        ) -> LiveServer:
            if model == TINY_LLAMA:
                model = tiny_llama_path
            key = (None if model is None else str(model), tuple(extra_args))
            if key not in servers:
                servers[key] = stack.enter_context(
                    run_server(
                        model,
                        extra_args,
                        work_dir=tmp_path_factory.mktemp("server"),
                        startup_timeout_s=startup_timeout_s,
                    )
                )
            return servers[key]

        yield launch


@pytest.fixture(scope="session")
def tiny_server(launch_server: LaunchServer) -> str:
    """Base URL ("http://127.0.0.1:PORT") of a default-args server on the tiny llama."""
    return launch_server().base_url


@pytest.fixture(scope="session")
def tiny_http(tiny_server: str) -> Iterator[httpx.Client]:
    """A keep-alive httpx client for raw requests to ``tiny_server`` (relative paths)."""
    with httpx.Client(base_url=tiny_server, timeout=60) as client:
        yield client
