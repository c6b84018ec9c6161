"""Pooling, normalization and the encoder's padding invariance, on tiny arrays."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from vllm_mlx.embeddings.bert import BertEncoder, EncoderArgs, encoder_weights
from vllm_mlx.embeddings.pooling import (
    PoolingConfig,
    PoolingMode,
    l2_normalize,
    pool,
    read_pooling,
    truncate_dimensions,
)

# Two rows, right-padded: the second has 2 real tokens of 3.
HIDDEN = mx.array(
    [
        [[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]],
        [[2.0, -2.0], [4.0, 8.0], [100.0, 100.0]],
    ]
)
MASK = mx.array([[1, 1, 1], [1, 1, 0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (PoolingMode.MEAN, [[3.0, 2.0], [3.0, 3.0]]),
        (PoolingMode.CLS, [[1.0, 2.0], [2.0, -2.0]]),
        (PoolingMode.LAST, [[5.0, 0.0], [4.0, 8.0]]),
        (PoolingMode.MAX, [[5.0, 4.0], [4.0, 8.0]]),
    ],
)
def test_pooling_ignores_padding(mode: PoolingMode, expected: list[list[float]]) -> None:
    np.testing.assert_allclose(np.array(pool(HIDDEN, MASK, mode)), expected)


def test_l2_normalize_gives_unit_rows_and_spares_zero() -> None:
    out = np.array(l2_normalize(mx.array([[3.0, 4.0], [0.0, 0.0]])))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_truncate_dimensions_renormalizes() -> None:
    out = truncate_dimensions(np.array([[3.0, 4.0, 12.0]], dtype=np.float32), 2)
    np.testing.assert_allclose(out, [[0.6, 0.8]], rtol=1e-6)


def _write(folder: Path, name: str, data: object) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))


def test_read_pooling_follows_modules_json(tmp_path: Path) -> None:
    modules = [
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    _write(tmp_path, "modules.json", modules)
    _write(tmp_path, "1_Pooling/config.json", {"pooling_mode_cls_token": True})
    assert read_pooling(tmp_path) == PoolingConfig(PoolingMode.CLS, normalize=True)
    _write(tmp_path, "1_Pooling/config.json", {"pooling_mode_lasttoken": True})
    _write(tmp_path, "modules.json", modules[:2])
    assert read_pooling(tmp_path) == PoolingConfig(PoolingMode.LAST, normalize=False)


def test_read_pooling_defaults_to_mean(tmp_path: Path) -> None:
    assert read_pooling(tmp_path) == PoolingConfig(PoolingMode.MEAN, normalize=False)


def _tiny_encoder(model_type: str) -> BertEncoder:
    config = {
        "model_type": model_type,
        "vocab_size": 50,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 32,
        "max_position_embeddings": 40,
    }
    mx.random.seed(0)
    return BertEncoder(EncoderArgs.from_config(config))


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_padding_does_not_change_a_row(model_type: str) -> None:
    encoder = _tiny_encoder(model_type)
    rows = [[1, 5, 9, 2], [1, 7, 2], [1, 3, 4, 6, 8, 11, 2]]
    width = max(map(len, rows))
    ids = mx.array([r + [0] * (width - len(r)) for r in rows])
    mask = mx.array([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    batched = np.array(pool(encoder(ids, mask), mask, PoolingMode.MEAN))
    for row, tokens in enumerate(rows):
        alone_ids = mx.array([tokens])
        alone_mask = mx.ones_like(alone_ids)
        alone = np.array(pool(encoder(alone_ids, alone_mask), alone_mask, PoolingMode.MEAN))
        np.testing.assert_allclose(batched[row], alone[0], atol=1e-5)


def test_roberta_positions_start_after_padding_id() -> None:
    args = EncoderArgs.from_config(
        {
            "model_type": "xlm-roberta",
            "vocab_size": 10,
            "hidden_size": 4,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "intermediate_size": 8,
            "max_position_embeddings": 514,
            "pad_token_id": 1,
        }
    )
    assert (args.position_offset, args.max_tokens) == (2, 512)


def test_checkpoint_names_lose_prefix_pooler_and_buffers() -> None:
    weights = {
        "bert.embeddings.word_embeddings.weight": mx.zeros((1,)),
        "embeddings.position_ids": mx.zeros((1,)),
        "pooler.dense.weight": mx.zeros((1,)),
        "roberta.encoder.layer.0.output.dense.bias": mx.zeros((1,)),
    }
    assert sorted(encoder_weights(weights)) == [
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.output.dense.bias",
    ]
