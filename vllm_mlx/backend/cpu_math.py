"""Attention and SwiGLU for MLX's CPU backend, with an exp that is 8x faster there.

MLX's Linux CPU build evaluates transcendental ops one scalar at a time: ``mx.exp``
costs ~12 ns an element here, against ~0.3 ns for a multiply. Softmax over the
attention scores and SiLU in the MLP are the two places a model takes exp of many
elements, and on this backend they are a large share of a step: 16 rows at 300
tokens of context spend ~16 ms of a ~125 ms decode step in the attention softmax,
and a 512-token prefill chunk over 4,000 tokens of context spends most of its time
there. ``fast_exp`` computes exp from a range reduction and a degree-5 polynomial
in a few fused kernels (~1.5 ns an element, relative error below 3e-7, about two
float32 roundings), and the functions below use it where mlx-lm's would call
``mx.exp`` through ``mx.fast.scaled_dot_product_attention`` and ``nn.silu``.

Only the CPU uses them (backend.fusion decides); GPU backends keep MLX's fused kernels.
"""

from __future__ import annotations

import mlx.core as mx

_LOG2E = 1.4426950408889634
# 2^f on [-1/2, 1/2]: minimax coefficients for relative error, c5 (highest degree) first.
_EXP2_POLY = (1.3276471e-3, 9.6755410e-3, 5.5507131e-2, 2.4022120e-1, 6.9314694e-1, 1.0000001)
# t + 1.5 * 2^23 - 1.5 * 2^23 rounds |t| < 2^22 to the nearest integer in two adds that
# fuse into the kernel; mx.floor runs as a separate op calling libm per element here.
_ROUND = 12582912.0


def _exp(x: mx.array) -> mx.array:
    # exp(x) = 2^t = 2^n * 2^f with n = round(t), f = t - n in [-1/2, 1/2]; 2^n is built
    # from its float32 bits. t is clamped to the normal range: exp underflows to ~1e-38
    # (not 0) and overflows to ~1.7e38 (not inf), harmless in the uses below. The
    # polynomial is evaluated in Estrin's form: its independent halves run in parallel
    # (1.7x faster than Horner's chain here).
    t = mx.clip(x * _LOG2E, -126.0, 127.0)
    n = (t + _ROUND) - _ROUND
    f = t - n
    c5, c4, c3, c2, c1, c0 = _EXP2_POLY
    f2 = f * f
    p = (c0 + c1 * f) + f2 * ((c2 + c3 * f) + f2 * (c4 + c5 * f))
    return p * mx.view((n.astype(mx.int32) + 127) << 23, mx.float32)


fast_exp = mx.compile(_exp)


@mx.compile
def _exp_shifted(scores: mx.array, row_max: mx.array) -> mx.array:
    return _exp(scores - row_max)


@mx.compile
def swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """silu(gate) * x, as mlx-lm's ``activations.swiglu``."""
    g = gate.astype(mx.float32)
    return (g * x.astype(mx.float32) / (1.0 + _exp(-g))).astype(x.dtype)


# Scores per tile of query rows: a tile (2 MB) stays in cache between its passes;
# a 512 x 4,096 chunk's scores in one piece go through memory four times and run
# 1.7x slower here. (4 MB tiles prefilled 5,000 tokens at 93 tok/s, 2 MB at 101,
# 1 MB at 93.)
_TILE_SCORES = 1 << 19


def attention(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    scale: float,
    mask: mx.array | str | None,
) -> mx.array:
    """What ``mx.fast.scaled_dot_product_attention`` computes, with the fast exp.

    queries (B, Hq, L, D); keys and values (B, Hk, S, D) with Hq a multiple of Hk;
    mask None, ``"causal"`` (bottom-right aligned), a boolean array (True = attend)
    or an additive one, broadcastable to (B, Hq, L, S). Scores and the softmax are
    float32. Long query spans run in tiles of rows; a causal tile reads only the
    keys its rows can see.
    """
    b, hq, length, _ = queries.shape
    span = keys.shape[2]
    rows = max(1, _TILE_SCORES // (b * hq * span))
    if length <= rows:
        return _attention(queries, keys, values, scale, mask)
    tiles = []
    for start in range(0, length, rows):
        end = min(start + rows, length)
        q = queries[:, :, start:end]
        if isinstance(mask, str):
            seen = span - length + end  # keys of the tile's last row, and before
            tiles.append(_attention(q, keys[:, :, :seen], values[:, :, :seen], scale, mask))
            continue
        m = mask
        if m is not None and m.ndim >= 2 and m.shape[-2] == length:
            m = m[..., start:end, :]
        tiles.append(_attention(q, keys, values, scale, m))
    return mx.concatenate(tiles, axis=2)


# Decode's p @ v folds the query heads of a KV head into one (rep, S) @ (S, D) product
# up to this many keys (1-2 % of a 16-row step at 200 keys); past ~5,000 keys that
# shape leaves OpenBLAS's small-matrix kernel, and the broadcast (1, S) rows do not.
_FOLD_SPAN = 4096


def _attention(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    scale: float,
    mask: mx.array | str | None,
) -> mx.array:
    """One tile. The normalisation divides the (L, D) output rather than the (L, S)
    probabilities, which saves a pass over the scores.

    One query per row (decode) takes its scores as keys @ queries^T, (S, D) @ (D, rep)
    per KV head: OpenBLAS keeps that shape on its small-matrix kernel at any context,
    while (1, D) @ (D, S) leaves it past ~1,500 keys and runs 2-4x slower (16 rows at
    2,048 keys: 379 -> 217 ms a step for 30 layers). The same dot products; only the
    BLAS path differs."""
    b, hq, length, dim = queries.shape
    hk, span = keys.shape[1], keys.shape[2]
    rep = hq // hk
    # Query heads that share a KV head broadcast over it: (B, Hk, rep, L, D) against
    # (B, Hk, 1, S, D).
    q = (queries * scale).reshape(b, hk, rep, length, dim)
    if length == 1:
        scores = (keys @ q[..., 0, :].swapaxes(-1, -2)).swapaxes(-1, -2)[..., None, :]
        if mask is None:
            scores = mx.contiguous(scores)  # a masked copy below is contiguous already
    else:
        scores = q @ keys[:, :, None].swapaxes(-1, -2)
    scores = scores.astype(mx.float32)
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"unknown attention mask {mask!r}")
        rows = mx.arange(span - length, span)[:, None]
        scores = mx.where(mx.arange(span)[None, :] <= rows, scores, -mx.inf)
    elif mask is not None:
        m = _per_kv_head(mask, hk, rep)
        scores = mx.where(m, scores, -mx.inf) if m.dtype == mx.bool_ else scores + m
    probs = _exp_shifted(scores, mx.max(scores, axis=-1, keepdims=True))
    total = probs.sum(axis=-1, keepdims=True).astype(values.dtype)
    probs = probs.astype(values.dtype)
    if length == 1 and span <= _FOLD_SPAN:
        out = (probs[..., 0, :] @ values)[..., None, :] / total
    else:
        out = (probs @ values[:, :, None]) / total
    return out.reshape(b, hq, length, dim)


def _per_kv_head(mask: mx.array, hk: int, rep: int) -> mx.array:
    """A mask broadcastable to (B, Hq, L, S) as one to (B, Hk, rep, L, S)."""
    while mask.ndim < 4:
        mask = mask[None]
    if mask.shape[1] == 1:
        return mask[:, :, None]
    return mask.reshape(mask.shape[0], hk, rep, *mask.shape[2:])
