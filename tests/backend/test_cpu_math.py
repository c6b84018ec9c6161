"""The CPU attention and SwiGLU compute what MLX's own kernels compute.

The runner-level check (paged passes, which use them on the CPU, equal mlx-lm's own
forward) is tests/backend/test_paged.py.
"""

from __future__ import annotations

import sys

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.models import llama

from vllm_mlx.backend import cpu_math
from vllm_mlx.backend.fusion import cpu_math_pass, unfuse, use_cpu_math


def test_fast_exp_is_float32_accurate() -> None:
    x = mx.linspace(-87.0, 88.0, 200_001)
    rel = mx.abs(cpu_math.fast_exp(x) - mx.exp(x)) / mx.exp(x)
    assert rel.max().item() < 5e-7
    assert cpu_math.fast_exp(mx.array([-1e4])).item() < 1e-37  # underflows to ~0, no NaN


def _qkv(b: int, hq: int, hk: int, length: int, span: int) -> tuple[mx.array, ...]:
    keys = mx.random.split(mx.random.key(b * 1000 + length * 10 + span), 3)
    q = mx.random.normal((b, hq, length, 16), key=keys[0])
    k = mx.random.normal((b, hk, span, 16), key=keys[1])
    v = mx.random.normal((b, hk, span, 16), key=keys[2])
    return q, k, v


@pytest.mark.parametrize(
    ("b", "hq", "hk", "length", "span", "mask"),
    [
        (1, 4, 4, 1, 40, None),  # one decode row, MHA
        (5, 6, 2, 1, 70, "bool"),  # a decode batch, GQA, per-row padding mask
        (1, 6, 3, 33, 50, "causal"),  # a prefill chunk after 17 cached tokens
        (3, 4, 1, 9, 30, "bool"),  # a padded prefill batch (MQA)
        (2, 4, 2, 5, 12, "additive"),
        (3, 6, 3, 1, 20, "additive"),  # decode with a per-query-head mask
        (2, 4, 2, 1, 25, "causal"),  # decode: one query sees every key
        (4, 6, 2, 1, 1600, "bool"),  # decode at a long context
        (2, 6, 2, 1, 5000, "bool"),  # past _FOLD_SPAN: p @ v in broadcast rows
    ],
)
def test_attention_matches_mlx(
    b: int, hq: int, hk: int, length: int, span: int, mask: str | None
) -> None:
    q, k, v = _qkv(b, hq, hk, length, span)
    m: mx.array | str | None = mask
    if mask == "bool":
        m = mx.random.uniform(shape=(b, 1, length, span), key=mx.random.key(3)) > 0.3
        m[..., 0] = True  # every row sees a key
    elif mask == "additive":
        m = mx.random.normal((b, hq, length, span), key=mx.random.key(4))
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=m)
    got = cpu_math.attention(q, k, v, 0.25, m)
    assert got.shape == want.shape
    assert mx.allclose(got, want, atol=1e-5).item()


@pytest.mark.parametrize("mask", ["causal", "bool"])
def test_long_spans_run_in_tiles_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, mask: str
) -> None:
    monkeypatch.setattr(cpu_math, "_TILE_SCORES", 4 * 64 * 2)  # two query rows a tile
    q, k, v = _qkv(2, 4, 2, 11, 64)
    m: mx.array | str = mask
    if mask == "bool":
        m = mx.tril(mx.ones((11, 64), dtype=mx.bool_), k=53)[None, None]
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=m)
    assert mx.allclose(cpu_math.attention(q, k, v, 0.25, m), want, atol=1e-5).item()


def test_swiglu_matches_silu_times_x() -> None:
    gate = mx.random.normal((3, 1, 64), key=mx.random.key(5)) * 30  # saturates both ends
    x = mx.random.normal((3, 1, 64), key=mx.random.key(6))
    assert mx.allclose(cpu_math.swiglu(gate, x), nn.silu(gate) * x, atol=1e-5).item()
    half = cpu_math.swiglu(gate.astype(mx.bfloat16), x.astype(mx.bfloat16))
    assert half.dtype == mx.bfloat16


def test_model_functions_are_routed_only_inside_our_passes() -> None:
    namespace = vars(sys.modules[llama.__name__])
    original = namespace["swiglu"]
    swaps = use_cpu_math(llama.MLP(llama.ModelArgs.from_dict(_TINY)))
    try:
        routed = namespace["swiglu"]
        if swaps:  # else a runner of this process routed it already
            assert routed is not original and routed.original is original  # type: ignore[attr-defined]
        calls: list[str] = []

        def spy(gate: mx.array, x: mx.array) -> mx.array:
            calls.append("cpu_math")
            return gate * x

        mp = pytest.MonkeyPatch()
        mp.setattr(cpu_math, "swiglu", spy)
        try:
            one = mx.ones((1, 4))
            routed(one, one)
            assert calls == []  # mlx-lm's own callers (e.g. its generate) keep mlx-lm's
            with cpu_math_pass():
                routed(one, one)
            assert calls == ["cpu_math"]
        finally:
            mp.undo()
    finally:
        unfuse(swaps)


_TINY = {
    "model_type": "llama",
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "intermediate_size": 16,
    "num_attention_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 10,
}
