"""Compiled decode ops replace norm and rope modules without changing their results.

The runner-level check (paged decode with these modules equals mlx-lm's own
forward) is tests/backend/test_paged.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from vllm_mlx.backend.fusion import (
    DecodeRMSNorm,
    DecodeRoPE,
    cpu_math_pass,
    fuse_decode_ops,
    unfuse,
)
from vllm_mlx.backend.loader import load_model
from vllm_mlx.config import ModelConfig


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize(
    ("dims", "traditional", "scale", "dtype"),
    [
        (16, False, 1.0, mx.float32),
        (16, True, 1.0, mx.float32),
        (8, False, 0.5, mx.float32),  # partial rotary dims, scaled positions
        (8, True, 1.0, mx.bfloat16),
    ],
)
def test_decode_rope_equals_plain_rope_bit_for_bit(
    rows: int, dims: int, traditional: bool, scale: float, dtype: mx.Dtype
) -> None:
    plain = nn.RoPE(dims, traditional=traditional, base=10000.0, scale=scale)
    fused = DecodeRoPE(dims, traditional=traditional, base=10000.0, scale=scale)
    offsets = mx.array([3 + 1011 * r for r in range(rows)])
    for in_pass in (False, True):  # compiled per call; one cos/sin table per pass
        with cpu_math_pass() if in_pass else contextlib.nullcontext():
            for heads in (4, 2):  # queries, then keys: one table serves both
                x = mx.random.normal((rows, heads, 1, 16), key=mx.random.key(heads))
                x = x.astype(dtype)
                assert mx.array_equal(fused(x, offsets), plain(x, offset=offsets)).item()
    prompt = mx.random.normal((1, 4, 5, 16), key=mx.random.key(7))  # prefill: plain path
    assert mx.array_equal(fused(prompt, 2), plain(prompt, offset=2)).item()


def test_decode_rope_follows_offsets_advanced_in_place() -> None:
    """mlx-lm's batched caches advance one offsets array in place (``offset += 1``):
    outside our passes no table may outlive a call."""
    plain = nn.RoPE(16, traditional=False, base=10000.0)
    fused = DecodeRoPE(16, traditional=False, base=10000.0)
    x = mx.random.normal((2, 4, 1, 16), key=mx.random.key(3))
    offsets = mx.array([5, 40])
    for _ in range(3):
        assert mx.array_equal(fused(x, offsets), plain(x, offset=offsets)).item()
        offsets += 1
    for step in range(3):  # our passes: a fresh offsets array and table each pass
        with cpu_math_pass():
            offsets = mx.array([5 + step, 40 + step])
            assert mx.array_equal(fused(x, offsets), plain(x, offset=offsets)).item()


@pytest.mark.parametrize("shape", [(1, 1, 32), (3, 1, 32), (1, 6, 32)])
def test_compiled_rms_norm_matches_plain_norm(shape: tuple[int, ...]) -> None:
    plain = nn.RMSNorm(32, eps=1e-5)
    plain.weight = mx.random.normal((32,), key=mx.random.key(1))
    fused = DecodeRMSNorm(32, eps=1e-5)
    fused.weight = plain.weight
    x = mx.random.normal(shape, key=mx.random.key(2))
    assert mx.allclose(fused(x), plain(x), atol=1e-6).item()


def test_fusing_a_model_keeps_its_weights_and_can_be_undone(tiny_llama_path: Path) -> None:
    model = load_model(ModelConfig(model=str(tiny_llama_path))).model
    layers = len(model.model.layers)
    before = dict(tree_flatten(model.parameters()))

    swaps = fuse_decode_ops(model)
    kinds = [type(m) for m in model.modules()]
    assert (kinds.count(DecodeRMSNorm), kinds.count(DecodeRoPE)) == (2 * layers + 1, layers)
    assert nn.RMSNorm not in kinds and nn.RoPE not in kinds
    after = dict(tree_flatten(model.parameters()))
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)  # the same weights, not copies
    assert fuse_decode_ops(model) == []  # nothing left to replace

    unfuse(swaps)
    kinds = [type(m) for m in model.modules()]
    assert DecodeRMSNorm not in kinds and DecodeRoPE not in kinds
    assert kinds.count(nn.RMSNorm) == 2 * layers + 1
