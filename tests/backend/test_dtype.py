"""Dtype policy and weight conversion on a tiny quantized model built here."""

from __future__ import annotations

import logging

import mlx.core as mx
import mlx.nn as nn
import pytest

from vllm_mlx.backend.dtype import (
    KEEP,
    apply_dtype,
    choose_dtype,
    describe_dtype,
    fp32_bytes,
)
from vllm_mlx.config import DType


class TinyLM(nn.Module):
    """Embedding -> norm -> linear -> tied head: the shapes of a real LM, in miniature."""

    def __init__(self, vocab: int = 64, dims: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dims)
        self.norm = nn.RMSNorm(dims)
        self.up = nn.Linear(dims, hidden, bias=True)
        self.down = nn.Linear(hidden, dims, bias=False)

    def __call__(self, ids: mx.array) -> mx.array:
        h = self.norm(self.embed(ids))
        h = h + self.down(nn.silu(self.up(h)))
        return self.embed.as_linear(h)


def _quantized_model(bits: int = 4) -> TinyLM:
    mx.random.seed(0)
    model = TinyLM()
    nn.quantize(model, group_size=32, bits=bits)
    # Give the norm a non-trivial, half-precision weight, as GGUF/mlx checkpoints have.
    model.norm.weight = (1 + 0.1 * mx.random.normal((64,))).astype(mx.float16)
    mx.eval(model.parameters())
    return model


IDS = mx.array([[1, 5, 9, 33, 63]])


@pytest.mark.parametrize("bits", [4, 8])
def test_float32_dequantization_matches_quantized_outputs(bits: int) -> None:
    model = _quantized_model(bits)
    expected = model(IDS).astype(mx.float32)
    apply_dtype(model, "float32")
    assert isinstance(model.up, nn.Linear) and not isinstance(model.up, nn.QuantizedLinear)
    assert isinstance(model.embed, nn.Embedding)
    assert model.up.weight.dtype == mx.float32 and model.up.bias.dtype == mx.float32
    assert model.norm.weight.dtype == mx.float32  # non-quantized float params are cast too
    got = model(IDS)
    assert got.dtype == mx.float32
    assert mx.allclose(got, expected, atol=2e-3, rtol=2e-3).item()
    assert describe_dtype(model) == "float32"


@pytest.mark.parametrize(("dtype", "tol"), [("float16", 2e-2), ("bfloat16", 1e-1)])
def test_half_dtypes_dequantize_and_cast(dtype: str, tol: float) -> None:
    model = _quantized_model()
    expected = model(IDS).astype(mx.float32)
    apply_dtype(model, dtype)
    target = getattr(mx, dtype)
    assert all(p.dtype == target for p in (model.up.weight, model.down.weight, model.embed.weight))
    assert model.norm.weight.dtype == target
    got = model(IDS).astype(mx.float32)
    assert mx.allclose(got, expected, atol=tol, rtol=tol).item()
    assert describe_dtype(model) == dtype


def test_keep_changes_nothing() -> None:
    model = _quantized_model()
    before = model(IDS)
    apply_dtype(model, KEEP)
    assert isinstance(model.up, nn.QuantizedLinear)
    assert isinstance(model.embed, nn.QuantizedEmbedding)
    assert model.norm.weight.dtype == mx.float16
    assert mx.array_equal(model(IDS), before).item()
    assert describe_dtype(model) == "quantized(4-bit)"


def test_describe_mixed_bits() -> None:
    model = _quantized_model()
    model.embed = nn.QuantizedEmbedding.from_embedding(nn.Embedding(64, 64), 32, 8)
    assert describe_dtype(model) == "quantized(4/8-bit)"


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        apply_dtype(_quantized_model(), "int8")


def test_fp32_bytes_counts_dequantized_weights() -> None:
    model = _quantized_model()
    # embed 64x64, norm 64, up 64x128 + bias 128, down 128x64; all as fp32.
    assert fp32_bytes(model) == 4 * (64 * 64 + 64 + 64 * 128 + 128 + 128 * 64)
    apply_dtype(model, "float32")
    assert fp32_bytes(model) == 4 * (64 * 64 + 64 + 64 * 128 + 128 + 128 * 64)


def test_auto_on_cpu_picks_float32_when_it_fits(caplog: pytest.LogCaptureFixture) -> None:
    model = _quantized_model()
    with caplog.at_level(logging.INFO, logger="vllm_mlx.backend.dtype"):
        assert choose_dtype(DType.AUTO, False, model, available_bytes=10**9) == "float32"
    assert "float32" in caplog.text


def test_auto_on_cpu_keeps_when_memory_is_short(caplog: pytest.LogCaptureFixture) -> None:
    model = _quantized_model()
    with caplog.at_level(logging.INFO, logger="vllm_mlx.backend.dtype"):
        assert choose_dtype("auto", False, model, available_bytes=fp32_bytes(model)) == KEEP
    assert "would need" in caplog.text


def test_auto_on_gpu_keeps_stored_weights() -> None:
    assert choose_dtype(DType.AUTO, True, _quantized_model(), available_bytes=10**12) == KEEP


@pytest.mark.parametrize("policy", ["float32", "float16", "bfloat16", "keep"])
def test_explicit_policies_are_honoured(policy: str) -> None:
    model = _quantized_model()
    assert choose_dtype(DType(policy), True, model) == policy
    assert choose_dtype(DType(policy), False, model, available_bytes=1) == policy


def test_auto_on_cpu_without_fast_blas_keeps_stored_weights() -> None:
    model = _quantized_model()
    assert choose_dtype(DType.AUTO, False, model, fast_blas=False, available_bytes=10**12) == KEEP
