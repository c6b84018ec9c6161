"""Pooling and normalization as a sentence-transformers folder describes them.

``modules.json`` lists the pipeline (Transformer, Pooling, optionally Normalize) and
``1_Pooling/config.json`` picks the pooling mode, e.g.::

    {"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false, ...}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # mlx loads after preload_blas(), inside the functions
    import mlx.core as mx


class PoolingMode(StrEnum):
    MEAN = "mean"  # average of the non-padding tokens
    CLS = "cls"  # the first token
    LAST = "lasttoken"  # the last non-padding token
    MAX = "max"  # element-wise max over the non-padding tokens


# 1_Pooling/config.json keys, in the order sentence-transformers checks them.
_MODE_KEYS = {
    "pooling_mode_cls_token": PoolingMode.CLS,
    "pooling_mode_lasttoken": PoolingMode.LAST,
    "pooling_mode_max_tokens": PoolingMode.MAX,
    "pooling_mode_mean_tokens": PoolingMode.MEAN,
}


@dataclass(frozen=True)
class PoolingConfig:
    mode: PoolingMode = PoolingMode.MEAN  # how token states become one vector
    normalize: bool = False  # unit L2 norm (a Normalize module follows the pooling)


def read_pooling(path: Path) -> PoolingConfig:
    """The pooling a sentence-transformers folder asks for; mean without a config."""
    modules = _json(path / "modules.json") or []
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    pooling_dir = next(
        (m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")),
        "1_Pooling",
    )
    config = _json(path / pooling_dir / "config.json") or {}
    mode = next((mode for key, mode in _MODE_KEYS.items() if config.get(key)), PoolingMode.MEAN)
    if isinstance(config.get("pooling_mode"), str):  # newer configs name the mode directly
        mode = PoolingMode(config["pooling_mode"])
    return PoolingConfig(mode=mode, normalize=normalize)


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def pool(hidden: mx.array, mask: mx.array, mode: PoolingMode) -> mx.array:
    """``(batch, length, dim)`` token states → ``(batch, dim)``; ``mask`` is 1 on real tokens.

    Rows are right-padded, so a row's last real token sits at ``sum(mask) - 1``.
    """
    import mlx.core as mx

    if mode is PoolingMode.CLS:
        return hidden[:, 0]
    weights = mask.astype(hidden.dtype)[..., None]
    if mode is PoolingMode.MEAN:
        total = (hidden * weights).sum(axis=1)
        return total / mx.maximum(weights.sum(axis=1), 1e-9)
    if mode is PoolingMode.MAX:
        floor = mx.array(-1e9, dtype=hidden.dtype)
        return mx.where(weights > 0, hidden, floor).max(axis=1)
    last = mask.astype(mx.int32).sum(axis=1) - 1
    return mx.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


def l2_normalize(vectors: mx.array) -> mx.array:
    """Unit L2 norm per row, as torch's ``F.normalize`` (eps 1e-12)."""
    import mlx.core as mx

    norms = mx.sqrt((vectors * vectors).sum(axis=-1, keepdims=True))
    return vectors / mx.maximum(norms, 1e-12)


def truncate_dimensions(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Matryoshka shortening: the first ``dimensions`` of each row, re-normalized."""
    head = vectors[:, :dimensions].astype(np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.maximum(norms, 1e-12)
