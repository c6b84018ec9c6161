"""A BERT-family encoder on ``mlx.nn``: BERT (MiniLM, BGE, E5, GTE) and XLM-RoBERTa.

Weight names follow Hugging Face's ``BertModel`` / ``XLMRobertaModel``
(``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``,
...), so a checkpoint's safetensors load without renaming beyond a ``bert.`` or
``roberta.`` prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

ROBERTA_TYPES = frozenset({"roberta", "xlm-roberta", "camembert"})
SUPPORTED_TYPES = frozenset({"bert"}) | ROBERTA_TYPES


@dataclass(frozen=True)
class EncoderArgs:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    position_offset: int = 0  # RoBERTa numbers positions from pad_token_id + 1

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderArgs:
        roberta = config.get("model_type") in ROBERTA_TYPES
        pad = int(config.get("pad_token_id", 1 if roberta else 0))
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_position_embeddings=config["max_position_embeddings"],
            type_vocab_size=config.get("type_vocab_size", 2),
            layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            hidden_act=config.get("hidden_act", "gelu"),
            pad_token_id=pad,
            position_offset=pad + 1 if roberta else 0,
        )

    @property
    def max_tokens(self) -> int:
        """Positions usable by one input."""
        return self.max_position_embeddings - self.position_offset


class Embeddings(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.offset = args.position_offset
        self.word_embeddings = nn.Embedding(args.vocab_size, args.hidden_size)
        self.position_embeddings = nn.Embedding(args.max_position_embeddings, args.hidden_size)
        self.token_type_embeddings = nn.Embedding(args.type_vocab_size, args.hidden_size)
        self.LayerNorm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)

    def __call__(self, ids: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1]) + self.offset
        x = self.word_embeddings(ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings(mx.zeros_like(ids))
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.heads = args.num_attention_heads
        self.query = nn.Linear(args.hidden_size, args.hidden_size)
        self.key = nn.Linear(args.hidden_size, args.hidden_size)
        self.value = nn.Linear(args.hidden_size, args.hidden_size)

    def __call__(self, x: mx.array, bias: mx.array) -> mx.array:
        batch, length, dim = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scale = 1.0 / math.sqrt(dim // self.heads)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=bias)
        return out.transpose(0, 2, 1, 3).reshape(batch, length, dim)


class DenseNorm(nn.Module):
    """``dense`` then dropout (a no-op here), residual add and ``LayerNorm``."""

    def __init__(self, dims_in: int, dims_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dims_in, dims_out)
        self.LayerNorm = nn.LayerNorm(dims_out, eps=eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.self = SelfAttention(args)
        self.output = DenseNorm(args.hidden_size, args.hidden_size, args.layer_norm_eps)

    def __call__(self, x: mx.array, bias: mx.array) -> mx.array:
        return self.output(self.self(x, bias), x)


class Intermediate(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.dense = nn.Linear(args.hidden_size, args.intermediate_size)
        # "gelu" is the exact (erf) GELU; the tanh variants are the approximation.
        exact = args.hidden_act == "gelu"
        self.act = nn.gelu if exact else nn.gelu_approx

    def __call__(self, x: mx.array) -> mx.array:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.attention = Attention(args)
        self.intermediate = Intermediate(args)
        self.output = DenseNorm(args.intermediate_size, args.hidden_size, args.layer_norm_eps)

    def __call__(self, x: mx.array, bias: mx.array) -> mx.array:
        h = self.attention(x, bias)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.layer = [Layer(args) for _ in range(args.num_hidden_layers)]


class BertEncoder(nn.Module):
    """Token ids and a padding mask in, the last layer's token states out."""

    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.args = args
        self.embeddings = Embeddings(args)
        self.encoder = Encoder(args)

    def __call__(self, ids: mx.array, mask: mx.array) -> mx.array:
        """``ids`` and ``mask`` are ``(batch, length)``; ``mask`` is 1 on real tokens."""
        x = self.embeddings(ids)
        # Additive bias over keys: padding gets a large negative score, never attended.
        bias = ((1.0 - mask.astype(x.dtype)) * -1e9)[:, None, None, :].astype(x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


def encoder_weights(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Checkpoint tensors renamed to this module's, without the pooler and buffers."""
    out = {}
    for name, value in weights.items():
        for prefix in ("bert.", "roberta.", "model."):
            name = name.removeprefix(prefix)
        if name.startswith(("embeddings.", "encoder.")) and not name.endswith("position_ids"):
            out[name] = value
    return out
