"""Prefill speed of one long prompt in-process: our paged runner against mlx-lm's own.

    .venv/bin/python scripts/profile_prefill.py --tokens 5000 --rounds 2

Our runner prefills in ``--chunk`` token chunks (the server's default, 512), mlx-lm
in its default 2,048-token steps over its own KV cache; the systems alternate, one
prompt each per round. Prints tokens/s.
"""

from __future__ import annotations

import argparse
import time

from vllm_mlx.backend.blas import preload_blas

preload_blas()

import mlx.core as mx  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

from vllm_mlx.backend.loader import load_model  # noqa: E402
from vllm_mlx.backend.runner import ModelRunner  # noqa: E402
from vllm_mlx.config import ModelConfig  # noqa: E402

BLOCK = 16
MLX_LM_STEP = 2048  # mlx-lm's prefill_step_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None, help="model (default: the embedded one)")
    args = parser.parse_args()
    loaded = load_model(ModelConfig(args.model))
    n = args.tokens
    tokens = [(7 * t) % 4000 + 10 for t in range(n)]
    runner = ModelRunner(loaded, BLOCK)
    table = list(range(1, n // BLOCK + 2))
    runner.ensure_blocks(len(table) + 1)

    def ours() -> None:
        for start in range(0, n, args.chunk):
            runner.prefill(tokens[start : start + args.chunk], table, start)

    def mlx_lm() -> None:
        cache = make_prompt_cache(loaded.model)
        for start in range(0, n, MLX_LM_STEP):
            loaded.model(mx.array([tokens[start : start + MLX_LM_STEP]]), cache=cache)
            mx.eval([c.state for c in cache])

    for round_no in range(1, args.rounds + 1):
        for name, run in (("ours", ours), ("mlx-lm", mlx_lm)):
            start = time.perf_counter()
            run()
            rate = n / (time.perf_counter() - start)
            print(f"round {round_no}  {n} tokens  {name:<7} {rate:7.1f} tok/s", flush=True)


if __name__ == "__main__":
    main()
