"""Weight dtype policy: pick the dtype a model runs in, and convert its weights.

On CPU, MLX sends fp32 matmuls to BLAS while quantized and half-precision
matmuls run on MLX's own, much slower, CPU kernels. With OpenBLAS preloaded,
float32 is the fastest for both prefill and decode (docs/dtype-measurements.md),
so ``auto`` dequantizes to float32 when it fits in memory. With MLX's reference
BLAS, float32 loses to the stored 4-bit weights, so ``auto`` keeps them. On
GPU, quantized kernels are fast and the weights stay as stored.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from vllm_mlx.config import DType

logger = logging.getLogger(__name__)

KEEP = "keep"
FLOAT_DTYPES: dict[str, mx.Dtype] = {
    "float32": mx.float32,
    "float16": mx.float16,
    "bfloat16": mx.bfloat16,
}
# Share of available memory the fp32 weights may take; the rest is for the KV
# cache, activations and the transient copy made while converting.
FP32_MEMORY_SHARE = 0.5

_QUANTIZED = (nn.QuantizedLinear, nn.QuantizedEmbedding)


def choose_dtype(
    policy: DType | str,
    device_is_gpu: bool,
    model: nn.Module,
    *,
    fast_blas: bool = True,
    available_bytes: int | None = None,
) -> str:
    """The dtype to run ``model`` in: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"keep"``.

    ``auto`` keeps stored weights on GPU. On CPU with a fast BLAS it picks
    float32 when the dequantized weights fit in ``FP32_MEMORY_SHARE`` of
    available memory (``available_bytes``, read from the system when None),
    else ``keep``; with the reference BLAS (``fast_blas=False``) it keeps.
    """
    policy = DType(policy)
    if policy is not DType.AUTO:
        logger.info("dtype %s: requested explicitly", policy.value)
        return policy.value
    if device_is_gpu:
        logger.info("dtype auto -> keep: GPU kernels run the stored (quantized) weights fast")
        return KEEP
    if not fast_blas:
        logger.info(
            "dtype auto -> keep: no optimized BLAS, so float32 matmul would be slower than "
            "the stored weights (install libopenblas0-pthread for float32)"
        )
        return KEEP
    need = fp32_bytes(model)
    available = available_memory() if available_bytes is None else available_bytes
    if available is None or need <= available * FP32_MEMORY_SHARE:
        logger.info(
            "dtype auto -> float32: CPU fp32 matmul uses BLAS; weights need %.2f GiB, %s available",
            need / 2**30,
            "unknown" if available is None else f"{available / 2**30:.2f} GiB",
        )
        return "float32"
    logger.warning(
        "dtype auto -> keep: float32 weights would need %.2f GiB, more than %.0f%% of the "
        "%.2f GiB available",
        need / 2**30,
        FP32_MEMORY_SHARE * 100,
        available / 2**30,
    )
    return KEEP


def apply_dtype(model: nn.Module, dtype: str) -> None:
    """Convert ``model`` in place: dequantize quantized layers and cast float params.

    ``keep`` changes nothing. Integer parameters are never cast.
    """
    if dtype == KEEP:
        return
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {[*FLOAT_DTYPES, KEEP]}")
    target = FLOAT_DTYPES[dtype]

    def convert(module: nn.Module) -> nn.Module:
        if isinstance(module, nn.QuantizedLinear):
            return dequantize_linear(module, target)
        if isinstance(module, nn.QuantizedEmbedding):
            return dequantize_embedding(module, target)
        return module

    leaves = tree_map(convert, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)
    model.set_dtype(target)
    mx.eval(model.parameters())


def _dequantized_weight(module: nn.QuantizedLinear | nn.QuantizedEmbedding) -> mx.array:
    """The full weight matrix; scales and biases go to fp32 first to avoid half rounding."""
    biases = module.get("biases")
    return mx.dequantize(
        module["weight"],
        scales=module["scales"].astype(mx.float32),
        biases=None if biases is None else biases.astype(mx.float32),
        group_size=module.group_size,
        bits=module.bits,
        mode=module.mode,
    )


def dequantize_linear(module: nn.QuantizedLinear, dtype: mx.Dtype) -> nn.Linear:
    """An ``nn.Linear`` holding the dequantized weight of ``module`` in ``dtype``."""
    weight = _dequantized_weight(module).astype(dtype)
    has_bias = "bias" in module
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
    linear.weight = weight
    if has_bias:
        linear.bias = module["bias"].astype(dtype)
    return linear


def dequantize_embedding(module: nn.QuantizedEmbedding, dtype: mx.Dtype) -> nn.Embedding:
    """An ``nn.Embedding`` holding the dequantized table of ``module`` in ``dtype``."""
    weight = _dequantized_weight(module).astype(dtype)
    embedding = nn.Embedding(weight.shape[0], weight.shape[1])
    embedding.weight = weight
    return embedding


def _leaf_modules(model: nn.Module) -> list[nn.Module]:
    flat = tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module)
    return [module for _, module in cast("list[tuple[str, nn.Module]]", flat)]


def _arrays(tree: Any) -> list[mx.array]:
    return [value for _, value in cast("list[tuple[str, mx.array]]", tree_flatten(tree))]


def fp32_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters would take in float32, quantized layers expanded."""
    total = 0
    for module in _leaf_modules(model):
        if isinstance(module, _QUANTIZED):
            rows, packed = module["weight"].shape[:-1], module["weight"].shape[-1]
            total += math.prod(rows) * (packed * 32 // module.bits)
            total += module["bias"].size if "bias" in module else 0
        else:
            total += sum(p.size for p in _arrays(module.parameters()))
    return total * 4


def describe_dtype(model: nn.Module) -> str:
    """Human label of what the weights run in, e.g. ``float32`` or ``quantized(4/8-bit)``."""
    bits = sorted({m.bits for m in _leaf_modules(model) if isinstance(m, _QUANTIZED)})
    if bits:
        return f"quantized({'/'.join(map(str, bits))}-bit)"
    sizes: dict[str, int] = {}
    for p in _arrays(model.parameters()):
        if mx.issubdtype(p.dtype, mx.floating):
            name = str(p.dtype).removeprefix("mlx.core.")
            sizes[name] = sizes.get(name, 0) + p.size
    return max(sizes, key=lambda k: sizes[k]) if sizes else "unknown"


def available_memory() -> int | None:
    """Bytes of memory available to this process (MemAvailable, capped by a cgroup limit)."""
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    limit = _cgroup_headroom()
    return available if limit is None else min(available, limit)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """Memory left under a cgroup v2 limit (containers report host RAM in /proc/meminfo)."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
