"""Measure prefill and decode speed of the embedded model per dtype, with and without OpenBLAS.

Each configuration runs in its own process, because OpenBLAS can only be
preloaded before MLX is imported (``VLLM_MLX_BLAS=none`` turns it off).

    .venv/bin/python scripts/measure_dtypes.py            # markdown table on stdout (~5 min)
    .venv/bin/python scripts/measure_dtypes.py --json     # one JSON object per config
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16", "keep")
BLAS_MODES = ("openblas", "none")
PROMPT_TOKENS = 128
DECODE_TOKENS = 32
REPEATS = 2  # best of N: the machine may be shared, and noise only ever slows a run down
REPO_ROOT = Path(__file__).resolve().parent.parent


def worker(dtype: str, prompt_tokens: int, decode_tokens: int, repeats: int) -> dict[str, object]:
    """Load the embedded model in ``dtype`` and time one prefill plus a greedy decode."""
    sys.path.insert(0, str(REPO_ROOT))
    from vllm_mlx.backend.loader import load_model
    from vllm_mlx.config import DType, ModelConfig

    loaded = load_model(ModelConfig(model=None, dtype=DType(dtype)))
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    text = "The quick brown fox jumps over the lazy dog. " * 64
    prompt = loaded.tokenizer.encode(text)[:prompt_tokens]

    def run(prompt_ids: list[int], steps: int) -> tuple[float, float]:
        cache = make_prompt_cache(loaded.model)
        start = time.perf_counter()
        logits = loaded.model(mx.array([prompt_ids]), cache=cache)
        token = mx.argmax(logits[0, -1])
        mx.eval(token)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            logits = loaded.model(token.reshape(1, 1), cache=cache)
            token = mx.argmax(logits[0, -1])
            mx.eval(token)
        return prefill, time.perf_counter() - start

    run(prompt[:16], 4)  # warm-up: first calls pay for allocation and kernel setup
    timings = [run(prompt, decode_tokens) for _ in range(repeats)]
    prefill_s = min(t[0] for t in timings)
    decode_s = min(t[1] for t in timings)
    return {
        "dtype": dtype,
        "weights": loaded.dtype,
        "blas": loaded.blas.split(" ")[0],
        "prefill_tok_s": round(len(prompt) / prefill_s, 1),
        "decode_tok_s": round(decode_tokens / decode_s, 1),
    }


def measure(dtype: str, blas: str, args: argparse.Namespace) -> dict[str, object]:
    """Run one configuration in a fresh process and return its result."""
    env = dict(os.environ)
    if blas == "none":
        env["VLLM_MLX_BLAS"] = "none"
    else:
        env.pop("VLLM_MLX_BLAS", None)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        dtype,
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--decode-tokens",
        str(args.decode_tokens),
        "--repeats",
        str(args.repeats),
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| dtype policy | weights | BLAS | prefill tok/s | decode tok/s |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['weights']} | {r['blas']} | "
            f"{r['prefill_tok_s']} | {r['decode_tok_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="DTYPE", help=argparse.SUPPRESS)
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    parser.add_argument("--decode-tokens", type=int, default=DECODE_TOKENS)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="best of N runs")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    args = parser.parse_args()
    if args.worker:
        logging.disable(logging.INFO)
        result = worker(args.worker, args.prompt_tokens, args.decode_tokens, args.repeats)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    rows = [measure(dtype, blas, args) for blas in BLAS_MODES for dtype in args.dtypes]
    out = "\n".join(json.dumps(r) for r in rows) if args.json else table(rows)
    sys.stdout.write(out + "\n")


if __name__ == "__main__":
    main()
