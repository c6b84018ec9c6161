"""Load a vision-language model in MLX layout with mlx-vlm's own model code.

Imported only for a model whose config has a ``vision_config``, and only where
mlx-vlm (the ``vision`` extra) is installed: the text server never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_mlx.backend.vision import VisionModel, VisionPrompter


@dataclass(frozen=True)
class LoadedVLM:
    model: Any  # the mlx-vlm Model: vision tower, projector and language model
    language_model: Any  # the part the runner pages (mlx-vlm LanguageModel)
    tokenizer: Any  # mlx_lm TokenizerWrapper over the processor's tokenizer files
    config: dict[str, Any]  # the model's config.json
    vision: VisionModel  # the engine's door (features, vision cache, forward)
    prompter: VisionPrompter  # the api's door (chat + images → token ids)


def load_vlm(path: Path, vision_cache_size: int) -> LoadedVLM:
    """Model, processor and tokenizer from ``path`` (a local MLX-layout directory)."""
    from mlx_lm.utils import load_tokenizer
    from mlx_vlm.utils import load, load_config

    model, processor = load(str(path))
    config = dict(load_config(path))
    vision = VisionModel(model, processor, config, vision_cache_size)
    image_token = str(getattr(processor, "image_token", "<image>"))
    # HF processors are not re-entrant: the api's prompter and the engine share one lock.
    prompter = VisionPrompter(processor, vision.image_token_id, image_token, vision.processor_lock)
    tokenizer = load_tokenizer(path)
    return LoadedVLM(model, model.language_model, tokenizer, config, vision, prompter)
