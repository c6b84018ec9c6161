"""Load an optimized BLAS into the process before MLX, on Linux CPU.

MLX's Linux CPU wheel links a reference BLAS (about 3 GFLOP/s for a 2048² fp32
matmul on two cores). Loading OpenBLAS with ``RTLD_GLOBAL`` before the first
``import mlx`` makes the dynamic linker resolve MLX's ``cblas_*``/``sgemm_``
symbols to OpenBLAS instead (about 126 GFLOP/s, measured). MLX sends only
fp32/fp64 matmuls to BLAS, so this matters for float32 weights.

This module must not import mlx: its whole point is to run before it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_VAR = "VLLM_MLX_BLAS"

# Debian/Ubuntu `libopenblas0-pthread`, then the generic alternatives symlinks.
_CANDIDATES: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

_state: str | None = None  # cached result: preloading is a once-per-process act


def preload_blas() -> str:
    """Load OpenBLAS globally before MLX and describe the BLAS that backs fp32 matmul.

    Returns ``"openblas (<path>)"``, ``"reference"`` (MLX's bundled BLAS),
    ``"accelerate"`` on macOS or ``"n/a"`` elsewhere. Idempotent: later calls
    return the first answer. ``VLLM_MLX_BLAS`` names a library path to load
    instead of the Debian one, or ``none`` to skip loading.
    """
    global _state
    if _state is None:
        _state = _preload()
    return _state


def _preload() -> str:
    system = platform.system()
    if system == "Darwin":
        return "accelerate"
    if system != "Linux":
        return "n/a"
    if "mlx" in sys.modules or "mlx.core" in sys.modules:
        return _too_late()
    choice = os.environ.get(ENV_VAR, "").strip()
    if choice.lower() == "none":
        logger.info("%s=none: keeping MLX's reference BLAS", ENV_VAR)
        return "reference"
    path = find_library(choice)
    if path is None:
        logger.info("no OpenBLAS found; fp32 matmul uses MLX's reference BLAS (slow)")
        return "reference"
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        logger.warning("could not load BLAS %s (%s); using MLX's reference BLAS", path, exc)
        return "reference"
    logger.info("loaded OpenBLAS from %s before MLX", path)
    return f"openblas ({path})"


def find_library(override: str) -> Path | None:
    """The library to load: the env override when set, else the first candidate present."""
    if override:
        path = Path(override).expanduser()
        if path.is_file():
            return path
        logger.warning("%s=%s does not exist; searching the default locations", ENV_VAR, path)
    for candidate in _CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def _too_late() -> str:
    """MLX is already loaded: report what it resolved to, since we can no longer change it."""
    mapped = _mapped_openblas()
    if mapped is not None:
        # Loaded by someone earlier in the process, e.g. via LD_PRELOAD.
        return f"openblas ({mapped})"
    logger.warning(
        "mlx was imported before preload_blas(); too late to load OpenBLAS, "
        "fp32 matmul stays on MLX's reference BLAS. Call preload_blas() first."
    )
    return "reference"


def _mapped_openblas() -> str | None:
    """Path of an OpenBLAS already mapped into this process, from /proc/self/maps."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "libopenblas" in Path(fields[5].strip()).name:
            return fields[5].strip()
    return None
