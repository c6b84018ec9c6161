"""GGUF import: the embedded SmolLM2 file end to end, and a synthetic float llama GGUF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import mlx.core as mx
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load as mlx_load
from tokenizers import Tokenizer

from vllm_mlx.backend import gguf
from vllm_mlx.backend.gguf import (
    GGUFImportError,
    import_gguf,
    infer_bits,
    mlx_name,
    quantization_config,
    unpermute_rows,
)
from vllm_mlx.backend.loader import LoaderError

PROMPT = "The capital of France is"
PROMPT_IDS = [504, 3575, 282, 4649, 314]
EXPECTED_CONTINUATION = " Paris.\n\nThe answer is:"

TRICKY_STRINGS = [
    "Hello, world!",
    "héllo wörld — ça va? naïve café, Ærøskøbing",
    "emoji 🤖👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷",
    "日本語のテキスト 中文 한국어 עברית العربية",
    "  leading and trailing spaces   ",
    "runs of     spaces\tand\t\ttabs",
    "line1\nline2\n\n\nline5\r\nwindows\n",
    "numbers 3.14159, 1,000,000 and 2024",
    "def f(x):\n    return x ** 2  # comment",
    "<|im_start|>user\nhi<|im_end|>",
    "zero\u200bwidth and\u00a0nbsp",
    "",
]

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
    ],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, with émojis 🎨?\n\nThanks"},
    ],
    [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": '{"a": 1}'},
        {"role": "user", "content": "again"},
    ],
]


@pytest.fixture(scope="module")
def imported(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_gguf(embedded, tmp_path_factory.mktemp("import") / "smollm2")


@pytest.fixture(scope="module")
def loaded(imported: Path) -> tuple[Any, Any]:
    return mlx_load(str(imported))


@pytest.fixture(scope="module")
def raw_template(embedded: Path) -> str:
    _, meta = mx.load(str(embedded), return_metadata=True)
    return meta["tokenizer.chat_template"]


def _greedy(model: Any, ids: list[int], steps: int) -> list[int]:
    cache = make_prompt_cache(model)
    x, out = mx.array([ids]), []
    for _ in range(steps):
        token = int(mx.argmax(model(x, cache=cache)[0, -1]).item())
        out.append(token)
        x = mx.array([[token]])
    return out


# --- the embedded SmolLM2 GGUF -------------------------------------------------------


def test_import_writes_complete_mlx_layout(imported: Path) -> None:
    names = {p.name for p in imported.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    }
    # Nothing half-written is left next to it.
    assert [p.name for p in imported.parent.iterdir()] == [imported.name]


def test_config_describes_mixed_quantization(imported: Path) -> None:
    config = json.loads((imported / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True  # the GGUF has no output.weight
    assert config["max_position_embeddings"] == 8192
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }


def test_tokenizer_and_generation_config(imported: Path) -> None:
    tok_config = json.loads((imported / "tokenizer_config.json").read_text())
    assert tok_config["bos_token"] == "<|im_start|>"
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["pad_token"] == "<|im_end|>"
    assert tok_config["unk_token"] == "<|endoftext|>"
    assert tok_config["add_bos_token"] is False
    assert tok_config["chat_template"].startswith("{% for message in messages %}")
    gen = json.loads((imported / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 1, "pad_token_id": 2, "eos_token_id": 2}


def test_existing_import_is_reused(embedded: Path, imported: Path) -> None:
    before = (imported / "model.safetensors").stat().st_mtime_ns
    assert import_gguf(embedded, imported) == imported
    assert (imported / "model.safetensors").stat().st_mtime_ns == before


def test_prompt_token_ids(loaded: tuple[Any, Any]) -> None:
    _, tokenizer = loaded
    assert tokenizer.encode(PROMPT) == PROMPT_IDS


def test_greedy_continuation_is_paris(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    out = _greedy(model, PROMPT_IDS, 8)
    assert tokenizer.decode(out) == EXPECTED_CONTINUATION


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_template_matches_raw_gguf_template(
    loaded: tuple[Any, Any], raw_template: str, messages: list[dict[str, str]]
) -> None:
    _, tokenizer = loaded
    expected = (
        jinja2.Environment()
        .from_string(raw_template)
        .render(messages=messages, add_generation_prompt=True)
    )
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == expected
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert ids[0] == 1 and ids.count(2) == len(messages) + (messages[0]["role"] != "system")


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_decode_encode_round_trip(loaded: tuple[Any, Any], text: str) -> None:
    _, tokenizer = loaded
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_stay_whole(loaded: tuple[Any, Any]) -> None:
    _, tokenizer = loaded
    assert tokenizer.encode("<|im_start|>") == [1]
    assert tokenizer.encode("<|im_end|>") == [2]
    assert tokenizer.encode("<|endoftext|>") == [0]
    assert tokenizer.encode("<repo_name>") == [3]
    ids = tokenizer.encode("<|im_start|>assistant\nHi<|im_end|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\nHi"


def test_digits_are_split_one_by_one(imported: Path) -> None:
    # SmolLM's (StarCoder) pre-tokenizer isolates every digit before the GPT-2 split.
    tokenizer = Tokenizer.from_file(str(imported / "tokenizer.json"))
    pieces = tokenizer.encode("year 2024").tokens
    assert pieces[-4:] == ["2", "0", "2", "4"]


# --- pieces, on synthetic data ---------------------------------------------------------


def _llama_cpp_permute(w: mx.array, n_heads: int) -> mx.array:
    """What llama.cpp's convert_hf_to_gguf.py does to Q/K rows."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def test_unpermute_inverts_llama_cpp_permute() -> None:
    w = mx.arange(9 * 64 * 3).reshape(9 * 64, 3)
    assert mx.array_equal(unpermute_rows(_llama_cpp_permute(w, 9), 9), w).item()


def test_unpermute_is_exact_on_packed_quantized_rows() -> None:
    mx.random.seed(1)
    w = mx.random.normal((3 * 64, 96))
    packed, scales, biases = mx.quantize(_llama_cpp_permute(w, 3), group_size=32, bits=4)
    restored = mx.dequantize(
        unpermute_rows(packed, 3),
        unpermute_rows(scales, 3),
        unpermute_rows(biases, 3),
        group_size=32,
        bits=4,
    )
    direct = mx.dequantize(*mx.quantize(w, group_size=32, bits=4), group_size=32, bits=4)
    assert mx.array_equal(restored, direct).item()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("token_embd.scales", "model.embed_tokens.scales"),
        ("output.weight", "lm_head.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("blk.0.attn_q.biases", "model.layers.0.self_attn.q_proj.biases"),
        ("blk.12.attn_output.weight", "model.layers.12.self_attn.o_proj.weight"),
        ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
        ("blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"),
        ("blk.29.ffn_down.scales", "model.layers.29.mlp.down_proj.scales"),
        ("rope_freqs.weight", None),
    ],
)
def test_tensor_names(name: str, expected: str | None) -> None:
    assert mlx_name(name) == expected


def test_unknown_tensor_is_an_error() -> None:
    with pytest.raises(GGUFImportError, match=r"blk\.0\.attn_q_norm"):
        mlx_name("blk.0.attn_q_norm.weight")


def test_infer_bits_and_quantization_config() -> None:
    w8, s8, _ = mx.quantize(mx.zeros((4, 64)), group_size=32, bits=8)
    w4, s4, _ = mx.quantize(mx.zeros((4, 64)), group_size=32, bits=4)
    assert (infer_bits(w8, s8), infer_bits(w4, s4)) == (8, 4)
    tensors = {"a.weight": w4, "a.scales": s4, "b.weight": w4, "b.scales": s4}
    tensors |= {"e.weight": w8, "e.scales": s8, "n.weight": mx.ones((4,))}
    assert quantization_config(tensors) == {
        "group_size": 32,
        "bits": 4,
        "e": {"group_size": 32, "bits": 8},
    }
    assert quantization_config({"n.weight": mx.ones((4,))}) is None


# A tiny float llama written as llama.cpp would: renamed, Q/K permuted, untied head, BOS on.
_ARGS = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 262,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
_GGUF_PARTS = {v: k for k, v in gguf._LAYER_NAMES.items()}


def _byte_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table, in byte order."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _write_synthetic_gguf(path: Path, arch: str = "llama") -> llama.Model:
    mx.random.seed(2)
    reference = llama.Model(llama.ModelArgs.from_dict(_ARGS))
    tensors: dict[str, mx.array] = {}
    for name, value in dict(tree_flatten(reference.parameters())).items():
        tensors[_gguf_name(name)] = value
    for i in range(_ARGS["num_hidden_layers"]):
        q, k = f"blk.{i}.attn_q.weight", f"blk.{i}.attn_k.weight"
        tensors[q] = _llama_cpp_permute(tensors[q], _ARGS["num_attention_heads"])
        tensors[k] = _llama_cpp_permute(tensors[k], _ARGS["num_key_value_heads"])
    tokens = [*_byte_alphabet(), "Ġt", "he", "<s>", "</s>", "<think>", "<pad>"]
    u32 = mx.uint32
    meta: dict[str, Any] = {
        "general.architecture": arch,
        "llama.embedding_length": mx.array(64, dtype=u32),
        "llama.feed_forward_length": mx.array(96, dtype=u32),
        "llama.block_count": mx.array(2, dtype=u32),
        "llama.attention.head_count": mx.array(4, dtype=u32),
        "llama.attention.head_count_kv": mx.array(2, dtype=u32),
        "llama.attention.layer_norm_rms_epsilon": mx.array(1e-5),
        "llama.context_length": mx.array(2048, dtype=u32),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["Ġ t", "h e"],
        "tokenizer.ggml.token_type": mx.array([1] * 258 + [3, 3, 4, 3], dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": mx.array(258, dtype=u32),
        "tokenizer.ggml.eos_token_id": mx.array(259, dtype=u32),
        "tokenizer.ggml.eot_token_id": mx.array(261, dtype=u32),
        "tokenizer.ggml.add_bos_token": mx.array(True),
    }
    mx.save_gguf(str(path), tensors, meta)
    return reference


def _gguf_name(mlx_param: str) -> str:
    inverse = {v: k for k, v in gguf._GLOBAL_NAMES.items()}
    base, _, suffix = mlx_param.rpartition(".")
    if base in inverse:
        return f"{inverse[base]}.{suffix}"
    _, _, layer, rest = base.split(".", 3)
    return f"blk.{layer}.{_GGUF_PARTS[rest]}.{suffix}"


def test_synthetic_float_llama_matches_reference(tmp_path: Path) -> None:
    reference = _write_synthetic_gguf(tmp_path / "tiny.gguf")
    out = import_gguf(tmp_path / "tiny.gguf", tmp_path / "tiny")
    config = json.loads((out / "config.json").read_text())
    assert "quantization" not in config and config["tie_word_embeddings"] is False
    model, tokenizer = mlx_load(str(out))
    ids = mx.array([[258, 5, 100, 256, 257, 3]])
    assert mx.allclose(model(ids), reference(ids), atol=1e-4).item()
    # BOS is added, merges apply, control and user-defined tokens stay whole.
    assert tokenizer.encode("the") == [258, ord("t"), 257]
    assert tokenizer.encode(" t<think>") == [258, 256, 260]
    assert tokenizer.decode(tokenizer.encode("héllo 👋"), skip_special_tokens=True) == "héllo 👋"
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [259, 261]


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    _write_synthetic_gguf(tmp_path / "qwen.gguf", arch="qwen3")
    with pytest.raises(GGUFImportError, match="qwen3") as info:
        import_gguf(tmp_path / "qwen.gguf", tmp_path / "out")
    assert isinstance(info.value, LoaderError)
    assert not (tmp_path / "out").exists()


def test_failed_import_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_synthetic_gguf(tmp_path / "tiny.gguf")

    def explode(*_: object) -> dict[str, Any]:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(gguf, "generation_config", explode)
    with pytest.raises(RuntimeError, match="interrupted"):
        import_gguf(tmp_path / "tiny.gguf", tmp_path / "cache" / "tiny")
    assert list((tmp_path / "cache").iterdir()) == []
