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

Attention and SwiGLU take exp of many elements, which MLX's CPU backend computes
slowly; :func:`use_cpu_math` points the model module's ``scaled_dot_product_attention``
and ``swiglu`` (the names mlx-lm's model files import) at backend.cpu_math while one
of our passes runs (:func:`cpu_math_pass`). Other callers of the same module, such
as mlx-lm's own generate in a benchmark, still get mlx-lm's functions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from vllm_mlx.backend import cpu_math

log = logging.getLogger(__name__)

_in_pass = threading.local()  # set while one of our passes builds its graph (cpu_math_pass)


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


@functools.cache
def _rotate(dims: int, traditional: bool) -> Callable[[mx.array, mx.array, mx.array], mx.array]:
    """x rotated by per-row cos/sin tables, with exactly the ops of mx.fast.rope's CPU path."""
    half = dims // 2

    def rotate(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
        if traditional:
            x1, x2 = x[..., 0:dims:2], x[..., 1:dims:2]
            pairs = mx.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
            out = pairs.reshape(*x.shape[:-1], dims)
        else:
            x1, x2 = x[..., :half], x[..., half:dims]
            out = mx.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
        if dims < x.shape[-1]:
            out = mx.concatenate([out, x[..., dims:]], axis=-1)
        return out

    return mx.compile(rotate)


@functools.cache
def _unit(dims: int, traditional: bool, dtype: mx.Dtype) -> mx.array:
    """1 where RoPE reads the first element of each pair, 0 at the second."""
    unit = mx.zeros((dims,), dtype=dtype)
    unit = unit.at[0:dims:2].add(1) if traditional else unit.at[: dims // 2].add(1)
    mx.eval(unit)
    return unit


class _RopeTables:
    """cos/sin of one decode pass's positions, computed once and shared by every layer.

    All layers of one of our passes get the same offsets array (the runner's
    BatchLayout, built fresh for the pass), so a table is keyed on that object; the
    tables live only as long as the pass (:func:`cpu_math_pass`), since other callers,
    such as mlx-lm's batched caches, advance their offsets array in place. A table comes
    from mx.fast.rope itself, applied to a vector whose first half (or even elements)
    is 1 and the rest 0: the rotation then returns its cos and sin bit for bit,
    whatever formula the installed MLX uses.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[Any, ...], tuple[mx.array, mx.array, mx.array]] = {}

    def get(self, rope: nn.RoPE, offset: mx.array, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
        key = (rope.dims, rope.traditional, rope.base, rope.scale, dtype)
        hit = self._last.get(key)
        if hit is not None and hit[0] is offset:
            return hit[1], hit[2]
        dims, half = rope.dims, rope.dims // 2
        unit = mx.broadcast_to(_unit(dims, rope.traditional, dtype), (offset.size, 1, 1, dims))
        table = mx.fast.rope(
            unit,
            dims,
            traditional=rope.traditional,
            base=rope.base,
            scale=rope.scale,
            offset=offset,
        )
        if rope.traditional:
            cos, sin = table[..., 0:dims:2], table[..., 1:dims:2]
        else:
            cos, sin = table[..., :half], table[..., half:]
        self._last[key] = (offset, cos, sin)
        return cos, sin


class DecodeRMSNorm(nn.RMSNorm):
    """RMSNorm whose one-token calls run compiled."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim >= 2 and x.shape[-2] == 1:
            return _rms_norm(self.eps)(x, self["weight"])
        return super().__call__(x)


class DecodeRoPE(nn.RoPE):
    """RoPE whose one-token calls with per-row offsets run compiled; inside our passes
    on cos/sin tables computed once per pass (see _RopeTables)."""

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        if x.shape[-2] == 1 and isinstance(offset, mx.array):
            tables: _RopeTables | None = getattr(_in_pass, "rope", None)
            if tables is not None and self.base is not None:
                cos, sin = tables.get(self, offset, x.dtype)
                return _rotate(self.dims, self.traditional)(x, cos, sin)
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


Swap = tuple[dict[str, Any], str, Any]  # (parent, key, what was there)


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
    """Put the originals back (when compiling turns out not to work here)."""
    for parent, key, original in swaps:
        parent[key] = original


# Below this many attention scores per call MLX's own kernel is as fast (the
# compiled exp's fixed cost wins nothing); a lone decode row at a few hundred tokens.
_MIN_SCORES = 16_384
# ... unless the keys alone pass this: MLX's q @ k^T then leaves OpenBLAS's small-matrix
# kernel (see cpu_math._attention); one row at 1,536 keys, 30 layers: 19.4 ms
# there, 12.9 ms in ours.
_LONG_SPAN = 1_200


@contextlib.contextmanager
def cpu_math_pass() -> Iterator[None]:
    """Mark the current thread as running one of our forward passes: attention and
    SwiGLU go through cpu_math, and decode RoPE shares one cos/sin table per pass."""
    _in_pass.active, _in_pass.rope = True, _RopeTables()
    try:
        yield
    finally:
        _in_pass.active, _in_pass.rope = False, None


def _active() -> bool:
    return bool(getattr(_in_pass, "active", False))


def _attention_dispatch(original: Callable[..., mx.array]) -> Callable[..., mx.array]:
    def scaled_dot_product_attention(
        queries: mx.array,
        keys: mx.array,
        values: mx.array,
        cache: Any,
        scale: float,
        mask: mx.array | str | None,
        sinks: mx.array | None = None,
    ) -> mx.array:
        b, hq, length, _ = queries.shape
        span = keys.shape[2]
        if (
            _active()
            and sinks is None
            and (b * hq * length * span >= _MIN_SCORES or span > _LONG_SPAN)
        ):
            return cpu_math.attention(queries, keys, values, scale, mask)
        return original(queries, keys, values, cache, scale, mask, sinks)

    scaled_dot_product_attention.original = original  # type: ignore[attr-defined]
    return scaled_dot_product_attention


def _swiglu_dispatch(original: Callable[..., mx.array]) -> Callable[..., mx.array]:
    def swiglu(gate: mx.array, x: mx.array) -> mx.array:
        return cpu_math.swiglu(gate, x) if _active() else original(gate, x)

    swiglu.original = original  # type: ignore[attr-defined]
    return swiglu


_DISPATCH: dict[str, Callable[[Callable[..., mx.array]], Callable[..., mx.array]]] = {
    "scaled_dot_product_attention": _attention_dispatch,
    "swiglu": _swiglu_dispatch,
}


def use_cpu_math(model: nn.Module) -> list[Swap]:
    """Route the model modules' attention and SwiGLU through backend.cpu_math."""
    swaps: list[Swap] = []
    names = {type(m).__module__ for m in model.modules()}
    for name in sorted(n for n in names if n.startswith("mlx_lm.models.")):
        namespace = vars(sys.modules[name])
        for attr, dispatch in _DISPATCH.items():
            current = namespace.get(attr)
            if current is None or hasattr(current, "original"):
                continue  # not used here, or routed already (another model of this family)
            namespace[attr] = dispatch(current)
            swaps.append((namespace, attr, current))
    return swaps
