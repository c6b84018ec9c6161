"""Compile the small ops of decode steps into fused kernels on MLX's CPU backend.

On the CPU, ``mx.fast.rope`` and ``mx.fast.rms_norm`` run as their reference
compositions (about 30 and 8 tiny ops), so a decode step of a 30-layer model is
some 4,000 ops, and dispatching them costs a real share of the step. Compiled
for one-token inputs they become a few fused kernels (MLX builds those with the
system C++ compiler once and caches them on disk). Prefill keeps the plain ops:
its matmuls dominate, and its shapes vary chunk by chunk. GPU backends already
have fused kernels, so nothing is done there.

Only mlx's standard ``nn.RMSNorm`` and ``nn.RoPE`` are replaced (by subclasses
with the same parameters); other variants keep running unfused.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

log = logging.getLogger(__name__)


@functools.cache
def _rms_norm(eps: float) -> Callable[[mx.array, mx.array], mx.array]:
    return mx.compile(lambda x, weight: mx.fast.rms_norm(x, weight, eps))


@functools.cache
def _rope(
    dims: int, traditional: bool, base: float | None, scale: float
) -> Callable[[mx.array, mx.array], mx.array]:
    def rope(x: mx.array, offset: mx.array) -> mx.array:
        return mx.fast.rope(x, dims, traditional=traditional, base=base, scale=scale, offset=offset)

    return mx.compile(rope)


class DecodeRMSNorm(nn.RMSNorm):
    """RMSNorm whose one-token calls run compiled."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim >= 2 and x.shape[-2] == 1:
            return _rms_norm(self.eps)(x, self["weight"])
        return super().__call__(x)


class DecodeRoPE(nn.RoPE):
    """RoPE whose one-token calls with per-row offsets (the paged runner's) run compiled."""

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        if x.shape[-2] == 1 and isinstance(offset, mx.array):
            return _rope(self.dims, self.traditional, self.base, self.scale)(x, offset)
        return super().__call__(x, offset)  # type: ignore[arg-type]  # mlx accepts arrays


def _fused(module: nn.Module) -> nn.Module | None:
    if type(module) is nn.RMSNorm:
        norm = DecodeRMSNorm(module.weight.shape[0], module.eps)
        norm.weight = module.weight
        return norm
    if type(module) is nn.RoPE:
        return DecodeRoPE(module.dims, module.traditional, module.base, module.scale)
    return None


Swap = tuple[dict[str, Any], str, nn.Module]  # (parent, key, module that was there)


def fuse_decode_ops(model: nn.Module) -> list[Swap]:
    """Replace the model's plain RMSNorm and RoPE modules; returns what to undo."""
    swaps: list[Swap] = []
    for parent in model.modules():
        for key, child in list(parent.items()):
            replacement = _fused(child) if isinstance(child, nn.Module) else None
            if replacement is not None:
                parent[key] = replacement
                swaps.append((parent, key, child))
    return swaps


def unfuse(swaps: list[Swap]) -> None:
    """Put the original modules back (when compiling turns out not to work here)."""
    for parent, key, original in swaps:
        parent[key] = original
