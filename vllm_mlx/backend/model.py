"""What the loader hands to the engine: a ready mlx-lm model and its tokenizer.

A vision-language model comes with its vision part (``vision``), built on mlx-vlm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm_mlx.backend.vision import VisionModel, VisionPrompter


@dataclass(frozen=True)
class SamplingDefaults:
    """Sampling values for requests that omit them; None: not set at this level.

    The model's come from its ``generation_config.json`` (as vLLM reads it); the api
    layer stacks the operator's flags above them and the protocol's defaults below.
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # 0 disables top-k

    def or_else(self, fallback: SamplingDefaults) -> SamplingDefaults:
        """These values, with ``fallback``'s where these are None."""
        return SamplingDefaults(
            temperature=self.temperature if self.temperature is not None else fallback.temperature,
            top_p=self.top_p if self.top_p is not None else fallback.top_p,
            top_k=self.top_k if self.top_k is not None else fallback.top_k,
        )


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # mlx-lm nn.Module, weights already in the chosen dtype
    tokenizer: Any  # mlx_lm TokenizerWrapper (HF fast tokenizer inside)
    model_id: str  # id reported by /v1/models (repo id, dir name or default id)
    path: Path  # local MLX-layout directory the model was loaded from
    config: dict[str, Any]  # the model's config.json
    context_length: int  # max positions the model supports
    eos_token_ids: frozenset[int]  # tokenizer EOS plus generation_config eos ids
    dtype: str  # dtype the weights run in, e.g. "float32" or "quantized(4-bit)"
    blas: str  # BLAS that backs fp32 matmul on CPU ("openblas", "reference", "n/a")
    device: str  # "cpu" or "gpu"
    sampling: SamplingDefaults = SamplingDefaults()  # generation_config.json or model card
    # A vision-language model's tower, processor and vision cache; ``model`` is then its
    # language model, paged like any text model. None: a text-only model.
    vision: VisionModel | None = None
    prompter: VisionPrompter | None = None  # the api's door to the same processor

    @property
    def vocab_size(self) -> int:
        """Rows of the logits (may exceed the tokenizer's vocabulary)."""
        config = self.config.get("text_config", self.config)
        return int(config.get("vocab_size") or len(self.tokenizer))
