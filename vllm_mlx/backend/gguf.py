"""Import a llama-architecture GGUF file into an MLX model directory (mlx-lm layout).

``mx.load`` reads GGUF natively: Q4_0/Q4_1/Q8_0 tensors come back already in
MLX's affine layout (packed ``uint32`` weight plus ``scales``/``biases`` per
group of 32), other types come back as floats. What is left for us:

* rename llama.cpp tensors to mlx-lm's llama module paths,
* undo llama.cpp's rotary row permutation of Q and K,
* write ``config.json`` with the per-tensor quantization (bits differ per tensor),
* rebuild ``tokenizer.json`` and ``tokenizer_config.json`` from the metadata.

The output directory appears atomically: everything is written to a sibling
temp directory that is renamed into place at the end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from tqdm import tqdm

from vllm_mlx.backend.errors import LoaderError

logger = logging.getLogger(__name__)

GROUP_SIZE = 32  # llama.cpp's Q4_0/Q4_1/Q8_0 blocks, the types mx.load keeps packed
SUPPORTED_ARCHITECTURES = frozenset({"llama"})

# llama.cpp token types (gguf-py TokenType).
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_SUFFIXES = frozenset({"weight", "scales", "biases", "bias"})
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)")
# Dropped on purpose: llama3 frequency factors we cannot express in config.json.
_IGNORED = frozenset({"rope_freqs"})

# Split regexes by `tokenizer.ggml.pre`, as llama.cpp applies them.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DIGIT_SPLIT_PRE = frozenset({"smollm", "starcoder", "refact"})
_GPT2_PRE = frozenset({"gpt2", "gpt-2", "default"})
_REGEX_PRE = {
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
}


class GGUFImportError(LoaderError):
    """The GGUF file cannot be imported (unsupported architecture, tokenizer or layout)."""


def import_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert ``gguf_path`` into an mlx-lm model directory at ``out_dir`` and return it.

    The directory holds ``config.json``, ``model.safetensors``, ``tokenizer.json``,
    ``tokenizer_config.json`` and ``generation_config.json``. It is created
    atomically; an existing ``out_dir`` is left as it is and returned.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if (out_dir / "config.json").is_file():
        logger.info("%s already holds an imported model; reusing it", out_dir)
        return out_dir
    logger.info("importing GGUF %s into %s", gguf_path, out_dir)
    weights, meta = read_gguf(gguf_path)
    with tqdm(total=len(weights) + 4, desc=f"Importing {gguf_path.name}", unit="step") as bar:
        config = build_config(meta, weights)
        tensors = convert_tensors(weights, config, bar)
        quantization = quantization_config(tensors)
        if quantization is not None:
            config["quantization"] = quantization
            config["quantization_config"] = quantization
        tokenizer = build_tokenizer(meta)
        bar.update(1)
        with _staged_dir(out_dir) as tmp:
            mx.save_safetensors(str(tmp / "model.safetensors"), tensors, {"format": "mlx"})
            bar.update(1)
            tokenizer.save(str(tmp / "tokenizer.json"))
            _write_json(tmp / "config.json", config)
            _write_json(tmp / "tokenizer_config.json", tokenizer_config(meta))
            _write_json(tmp / "generation_config.json", generation_config(meta))
            bar.update(2)
    return out_dir


def read_gguf(path: Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Tensors and metadata of a GGUF file, with the architecture checked."""
    try:
        weights, meta = cast(
            "tuple[dict[str, mx.array], dict[str, Any]]", mx.load(str(path), return_metadata=True)
        )
    except (RuntimeError, ValueError) as exc:
        raise GGUFImportError(f"cannot read GGUF file {path}: {exc}") from exc
    arch = _meta(meta, "general.architecture", "")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFImportError(
            f"{path.name}: GGUF architecture {arch!r} is not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))})"
        )
    return weights, meta


def _meta(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    """A metadata value as plain Python (mx.load gives scalars as 0-d arrays)."""
    value = meta.get(key, default)
    if isinstance(value, mx.array):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def build_config(meta: dict[str, Any], weights: dict[str, mx.array]) -> dict[str, Any]:
    """An mlx-lm/HF llama ``config.json`` from the GGUF hyper-parameters."""
    arch = _meta(meta, "general.architecture")

    def hp(key: str, default: Any = None) -> Any:
        value = _meta(meta, f"{arch}.{key}", default)
        if value is None:
            raise GGUFImportError(f"GGUF metadata lacks {arch}.{key}")
        return value

    hidden, heads = hp("embedding_length"), hp("attention.head_count")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": hp("feed_forward_length"),
        "num_hidden_layers": hp("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": hp("attention.head_count_kv", heads),
        "head_dim": hp("attention.key_length", hidden // heads),
        "rms_norm_eps": hp("attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": hp("rope.freq_base", 10000.0),
        "max_position_embeddings": hp("context_length", 4096),
        "vocab_size": hp("vocab_size", len(_meta(meta, "tokenizer.ggml.tokens", []))),
        "tie_word_embeddings": "output.weight" not in weights,
        "attention_bias": "blk.0.attn_q.bias" in weights,
        "mlp_bias": False,
        "bos_token_id": _meta(meta, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _meta(meta, "tokenizer.ggml.eos_token_id"),
    }
    if (scaling := _rope_scaling(meta, arch)) is not None:
        config["rope_scaling"] = scaling
    if "rope_freqs.weight" in weights:
        logger.warning("GGUF has llama3 rope_freqs; they are dropped (long-context scaling off)")
    config["gguf"] = {
        "name": _meta(meta, "general.name"),
        "file_type": _meta(meta, "general.file_type"),
    }
    return config


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any] | None:
    """Linear RoPE scaling, the one kind GGUF metadata describes fully."""
    kind = _meta(meta, f"{arch}.rope.scaling.type", "none")
    factor = _meta(meta, f"{arch}.rope.scaling.factor")
    if kind == "linear" and factor:
        return {"type": "linear", "factor": float(factor)}
    if kind not in ("none", "linear"):
        logger.warning("GGUF RoPE scaling %r is not imported; positions use plain RoPE", kind)
    return None


def mlx_name(gguf_name: str) -> str | None:
    """mlx-lm parameter name for a GGUF tensor name, or None for tensors we drop."""
    base, _, suffix = gguf_name.rpartition(".")
    if suffix not in _SUFFIXES:
        raise GGUFImportError(f"unexpected GGUF tensor {gguf_name!r}")
    if base in _IGNORED:
        return None
    if base in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[base]}.{suffix}"
    match = _LAYER_RE.fullmatch(base)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise GGUFImportError(f"unexpected GGUF tensor {gguf_name!r} for a llama model")
    layer, part = match.groups()
    return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{suffix}"


def unpermute_rows(a: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's Q/K rotary permutation along the rows (output features).

    llama.cpp's converter turns HF's per-head half-split rotary layout
    (rows ``[x0..x_{d/2-1}, y0..y_{d/2-1}]``) into interleaved pairs
    (``[x0, y0, x1, y1, ...]``) by viewing a head as (2, d/2) and swapping the
    axes. Here each head is viewed as (d/2, 2) and swapped back. Quantization
    groups run along the input dimension, so permuting whole rows of a packed
    weight, its scales and its biases is exact.
    """
    rows = a.shape[0]
    if rows % (2 * n_heads):
        raise GGUFImportError(f"{rows} rows do not split into {n_heads} rotary heads")
    half = rows // n_heads // 2
    return a.reshape(n_heads, half, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def convert_tensors(
    weights: dict[str, mx.array], config: dict[str, Any], progress: tqdm | None = None
) -> dict[str, mx.array]:
    """Renamed tensors with Q and K rows in HF order, ready for mlx-lm's llama."""
    heads = {
        "attn_q": config["num_attention_heads"],
        "attn_k": config["num_key_value_heads"],
    }
    out: dict[str, mx.array] = {}
    for name in sorted(weights):
        target = mlx_name(name)
        if target is not None:
            tensor = weights[name]
            match = _LAYER_RE.match(name)
            if match is not None and match.group(2) in heads:
                tensor = unpermute_rows(tensor, heads[match.group(2)])
            mx.eval(tensor)  # do the work here, so the progress bar tracks it
            out[target] = tensor
        if progress is not None:
            progress.update(1)
    return out


def infer_bits(weight: mx.array, scales: mx.array, group_size: int = GROUP_SIZE) -> int:
    """Bit width of a packed affine weight, from its packed and scale shapes."""
    in_dims = scales.shape[-1] * group_size
    packed_bits = weight.shape[-1] * 32
    if packed_bits % in_dims:
        raise GGUFImportError(
            f"packed width {weight.shape[-1]} does not match {in_dims} inputs "
            f"at group size {group_size}"
        )
    return packed_bits // in_dims


def quantization_config(tensors: dict[str, mx.array]) -> dict[str, Any] | None:
    """mlx-lm ``quantization`` dict: the common bit width plus per-module overrides.

    ``mlx_lm.utils.load_model`` looks a module path up in this dict before the
    defaults, so e.g. an 8-bit ``model.embed_tokens`` among 4-bit layers loads right.
    """
    bits = {
        name.removesuffix(".scales"): infer_bits(tensors[name.replace(".scales", ".weight")], t)
        for name, t in tensors.items()
        if name.endswith(".scales")
    }
    if not bits:
        return None
    default_bits = Counter(bits.values()).most_common(1)[0][0]
    config: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": default_bits}
    for module, b in sorted(bits.items()):
        if b != default_bits:
            config[module] = {"group_size": GROUP_SIZE, "bits": b}
    return config


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` from the GGUF vocabulary and merges."""
    kind = _meta(meta, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFImportError(
            f"GGUF tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')"
        )
    tokens: list[str] = _meta(meta, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _meta(meta, "tokenizer.ggml.merges", [])]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = _meta(meta, "tokenizer.ggml.pre", "default")
    if pre == "qwen2":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = _post_processor(meta, tokens)
    types = _meta(meta, "tokenizer.ggml.token_type") or [1] * len(tokens)
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, kind in zip(tokens, types, strict=True)
            if kind == _TOKEN_CONTROL
        ]
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, kind in zip(tokens, types, strict=True)
            if kind == _TOKEN_USER_DEFINED
        ]
    )
    return tokenizer


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer matching llama.cpp's ``tokenizer.ggml.pre`` name."""
    if pre in _DIGIT_SPLIT_PRE:
        # StarCoder-family vocabularies (SmolLM included) split every digit first.
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    if pre in _REGEX_PRE:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_REGEX_PRE[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if pre not in _GPT2_PRE:
        logger.warning("unknown tokenizer.ggml.pre %r; using the GPT-2 split", pre)
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _post_processor(meta: dict[str, Any], tokens: list[str]) -> processors.PostProcessor:
    """Byte-level offsets, plus BOS/EOS insertion when the metadata asks for it."""
    byte_level = processors.ByteLevel(trim_offsets=False)
    bos_id = _meta(meta, "tokenizer.ggml.bos_token_id")
    eos_id = _meta(meta, "tokenizer.ggml.eos_token_id")
    add_bos = bool(_meta(meta, "tokenizer.ggml.add_bos_token", False)) and bos_id is not None
    add_eos = bool(_meta(meta, "tokenizer.ggml.add_eos_token", False)) and eos_id is not None
    if not (add_bos or add_eos):
        return byte_level
    head = [tokens[bos_id]] if add_bos else []
    tail = [tokens[eos_id]] if add_eos else []
    specials = [(t, tokens.index(t)) for t in dict.fromkeys(head + tail)]
    template = processors.TemplateProcessing(
        single=" ".join([*head, "$A", *tail]),
        pair=" ".join([*head, "$A", *tail, *head, "$B:1", *tail]),
        special_tokens=specials,
    )
    return processors.Sequence([byte_level, template])


def _token(meta: dict[str, Any], key: str) -> str | None:
    """The token string behind a ``tokenizer.ggml.<key>`` id, if present."""
    token_id = _meta(meta, f"tokenizer.ggml.{key}")
    tokens = _meta(meta, "tokenizer.ggml.tokens", [])
    return tokens[token_id] if token_id is not None and token_id < len(tokens) else None


def tokenizer_config(meta: dict[str, Any]) -> dict[str, Any]:
    """``tokenizer_config.json``: special tokens, BOS/EOS flags and the chat template."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": _token(meta, "bos_token_id"),
        "eos_token": _token(meta, "eos_token_id"),
        "unk_token": _token(meta, "unknown_token_id"),
        "pad_token": _token(meta, "padding_token_id"),
        "add_bos_token": bool(_meta(meta, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_meta(meta, "tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": _meta(meta, f"{_meta(meta, 'general.architecture')}.context_length"),
    }
    if (template := _meta(meta, "tokenizer.chat_template")) is not None:
        config["chat_template"] = template
    return {k: v for k, v in config.items() if v is not None}


def generation_config(meta: dict[str, Any]) -> dict[str, Any]:
    """``generation_config.json``: BOS, pad and every end-of-generation id (EOS, EOT, EOM)."""
    eos = [
        token_id
        for key in ("eos_token_id", "eot_token_id", "eom_token_id")
        if (token_id := _meta(meta, f"tokenizer.ggml.{key}")) is not None
    ]
    config: dict[str, Any] = {
        "bos_token_id": _meta(meta, "tokenizer.ggml.bos_token_id"),
        "pad_token_id": _meta(meta, "tokenizer.ggml.padding_token_id"),
        "eos_token_id": eos[0] if len(set(eos)) == 1 else list(dict.fromkeys(eos)) or None,
    }
    return {k: v for k, v in config.items() if v is not None}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@contextmanager
def _staged_dir(out_dir: Path) -> Iterator[Path]:
    """A temp dir next to ``out_dir`` that is renamed onto it on success, removed on failure."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the final dir should not be
    try:
        yield tmp
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
            # Another process finished the same import first; keep its copy.
            logger.info("%s was imported concurrently; reusing it", out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
