"""The tiny-model fixture: loadable by mlx-lm, ChatML template, lossless tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import (
    IM_END,
    SPECIAL_TOKENS,
    build_tiny_model,
)

ROUNDTRIP_TEXTS = [
    "The capital of France is Paris.",
    "  leading spaces, tabs\tand\nnewlines  ",
    "Café naïve Zürich São Paulo Ångström",
    "Emoji 🚀🎉 and a family 👨‍👩‍👧 and flags 🇫🇷",
    "日本語のテキスト 中文 한국어 Ελληνικά Русский",
    '{"json": [1, 2.5, null], "k": "v"}',
]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny_path(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"tiny_{request.param}_path")


@pytest.fixture(scope="module")
def loaded(tiny_path: Path) -> tuple[object, object]:
    import mlx_lm

    return mlx_lm.load(str(tiny_path))


def _greedy(model: object, token_ids: list[int], max_tokens: int) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    out = []
    for (token, _), _ in zip(
        generate_step(mx.array(token_ids), model, max_tokens=max_tokens),
        range(max_tokens),
        strict=False,
    ):
        out.append(int(token))
    return out


def test_layout_and_config(tiny_path: Path) -> None:
    names = {p.name for p in tiny_path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= names
    config = json.loads((tiny_path / "config.json").read_text())
    tokenizer = json.loads((tiny_path / "tokenizer.json").read_text())
    vocab = len(tokenizer["model"]["vocab"])
    assert config["vocab_size"] == vocab
    assert 500 <= vocab <= 1000
    assert config["max_position_embeddings"] == 2048
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert config["tie_word_embeddings"] is (config["model_type"] == "qwen2")
    tok_config = json.loads((tiny_path / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == IM_END
    assert "<|im_start|>" in tok_config["chat_template"]


def test_loads_and_generates_deterministically(tiny_path: Path, loaded: tuple) -> None:
    model, tokenizer = loaded
    prompt = tokenizer.encode("Once upon a time")
    first = _greedy(model, prompt, 64)
    assert len(first) == 64
    assert first == _greedy(model, prompt, 64)
    # Greedy text is varied and never ends the turn or emits broken UTF-8.
    assert len(set(first)) >= 20
    assert not set(first) & set(tokenizer.eos_token_ids)
    assert "\ufffd" not in tokenizer.decode(first)


def test_mlx_lm_generate_text(loaded: tuple) -> None:
    import mlx_lm

    model, tokenizer = loaded
    messages = [{"role": "user", "content": "Hello!"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = mlx_lm.generate(model, tokenizer, prompt, max_tokens=16, verbose=False)
    assert isinstance(text, str) and text


def test_chat_template_renders_chatml(loaded: tuple) -> None:
    _, tokenizer = loaded
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi 🙂"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi 🙂<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert without == text.removesuffix("<|im_start|>assistant\n")


def test_special_tokens_are_single_ids(loaded: tuple) -> None:
    _, tokenizer = loaded
    ids = [tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert tokenizer.encode("<|im_start|>user\nhi<|im_end|>")[0] == ids[1]
    assert tokenizer.eos_token == IM_END
    assert tokenizer.convert_tokens_to_ids(IM_END) in tokenizer.eos_token_ids


@pytest.mark.parametrize("text", ROUNDTRIP_TEXTS)
def test_encode_decode_roundtrip(loaded: tuple, text: str) -> None:
    _, tokenizer = loaded
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text


def test_multibyte_characters_split_across_tokens(loaded: tuple) -> None:
    _, tokenizer = loaded
    ids = tokenizer.encode("🚀")
    assert len(ids) > 1
    pieces = [tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in piece for piece in pieces)


def test_build_is_deterministic(tmp_path: Path, tiny_llama_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again", "llama")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_llama_path / name).read_bytes(), name


def test_longer_window_keeps_weights(tmp_path: Path, tiny_llama_path: Path) -> None:
    long = build_tiny_model(tmp_path / "long", "llama", max_position_embeddings=4096)
    assert json.loads((long / "config.json").read_text())["max_position_embeddings"] == 4096
    same = (long / "model.safetensors").read_bytes() == (
        tiny_llama_path / "model.safetensors"
    ).read_bytes()
    assert same


def test_unknown_arch_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported tiny arch"):
        build_tiny_model(tmp_path / "x", "gpt2")
