"""Facts about the loaded model that diagnostics compare, read once at load time.

The api layer sees these plain values, never the mlx-lm model or the HF tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_mlx.backend.model import LoadedModel


@dataclass(frozen=True)
class ModelFacts:
    loaded_dtype: str  # what the weights run in, e.g. "float32" or "quantized(4-bit)"
    trained_dtype: str | None  # config.json torch_dtype (or dtype); None: not stated
    device: str  # "cpu" or "gpu"
    model_type: str | None  # config.json model_type, e.g. "llama"
    architectures: tuple[str, ...]  # config.json architectures, e.g. ("LlamaForCausalLM",)
    tokenizer_eos_id: int | None  # the tokenizer's own eos_token_id
    generation_eos_ids: tuple[int, ...] | None  # generation_config.json's; None: no file or key


def model_facts(loaded: LoadedModel) -> ModelFacts:
    """What ``/health/diagnostics`` needs to know about ``loaded``."""
    config = loaded.config
    text_config = config.get("text_config") or {}
    trained = config.get("torch_dtype") or config.get("dtype") or text_config.get("torch_dtype")
    hf = getattr(loaded.tokenizer, "_tokenizer", loaded.tokenizer)
    eos = getattr(hf, "eos_token_id", None)
    return ModelFacts(
        loaded_dtype=loaded.dtype,
        trained_dtype=str(trained).lower().removeprefix("torch.") if trained else None,
        device=loaded.device,
        model_type=config.get("model_type"),
        architectures=tuple(str(a) for a in config.get("architectures") or ()),
        tokenizer_eos_id=eos if isinstance(eos, int) else None,
        generation_eos_ids=generation_eos_ids(loaded.path),
    )


def generation_eos_ids(path: Path) -> tuple[int, ...] | None:
    """``eos_token_id`` of ``path/generation_config.json`` as a tuple; None when absent."""
    gen_file = path / "generation_config.json"
    if not gen_file.is_file():
        return None
    try:
        value: Any = json.loads(gen_file.read_text()).get("eos_token_id")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list):
        return tuple(int(i) for i in value)
    return None
