"""Time one batched decode step in-process: our paged runner against mlx-lm's BatchKVCache.

    .venv/bin/python scripts/profile_decode.py --batch 8,16 --context 300 --steps 24

Every sequence gets ``--context`` tokens of prompt (prefilled, not timed), then
``--steps`` greedy decode steps are timed, alternating the two systems step block by
step block so machine drift hits both. Our block tables are scattered (every row
shares the first block, then its own blocks interleaved with the others'), as a
loaded server's are. Prints ms per step and the op count of one step's graph.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from vllm_mlx.backend.blas import preload_blas

preload_blas()

import mlx.core as mx  # noqa: E402
from mlx_lm.models.cache import BatchKVCache  # noqa: E402

from vllm_mlx.backend.loader import load_model  # noqa: E402
from vllm_mlx.backend.runner import ModelRunner  # noqa: E402
from vllm_mlx.config import ModelConfig  # noqa: E402

BLOCK = 16


def ours(
    runner: ModelRunner, batch: int, context: int, steps: int, slots: bool
) -> Callable[[], None]:
    """A step function over scattered block tables, prompts already prefilled."""
    per_row = -(-(context + steps + 1) // BLOCK)
    tables = [[0] + [1 + r + batch * i for i in range(per_row - 1)] for r in range(batch)]
    base = 1 + batch * per_row if slots else 0  # the two runs use separate blocks
    tables = [[b + base if b else 0 for b in t] for t in tables]
    runner.ensure_blocks(1 + 2 * batch * per_row)
    keys = list(range(batch)) if slots else None
    for r, table in enumerate(tables):
        runner.prefill([(7 * r + t) % 1000 + 1 for t in range(context)], table, 0)
    state = {"pos": context, "tokens": mx.ones((batch,), dtype=mx.int32)}

    def step() -> None:
        pos = state["pos"]
        logits = runner.decode(state["tokens"], tables, [pos] * batch, keys)
        state["tokens"] = mx.argmax(logits, axis=-1).astype(mx.int32)
        mx.eval(state["tokens"], runner.storage.state())
        state["pos"] = pos + 1

    return step


def mlx_lm_batch(model: object, batch: int, context: int) -> Callable[[], None]:
    """mlx-lm's own batched cache (what BatchGenerator and mlx_lm.server use)."""
    caches = [BatchKVCache([0] * batch) for _ in model.layers]  # type: ignore[attr-defined]
    prompt = mx.array([[(7 * r + t) % 1000 + 1 for t in range(context)] for r in range(batch)])
    mx.eval(model(prompt, cache=caches))  # type: ignore[operator]
    state = {"tokens": mx.ones((batch, 1), dtype=mx.int32)}

    def step() -> None:
        logits = model(state["tokens"], cache=caches)  # type: ignore[operator]
        state["tokens"] = mx.argmax(logits[:, -1, :], axis=-1).astype(mx.int32)[:, None]
        mx.eval(state["tokens"], [c.keys for c in caches])

    return step


def timed(step: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", default="8,16")
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--model", default=None, help="model (default: the embedded one)")
    args = parser.parse_args()
    loaded = load_model(ModelConfig(args.model))
    for batch in (int(b) for b in args.batch.split(",")):
        runner = ModelRunner(loaded, BLOCK)
        systems = {
            "gather": ours(runner, batch, args.context, args.steps, slots=False),
            "slots": ours(runner, batch, args.context, args.steps, slots=True),
            "mlx-lm": mlx_lm_batch(loaded.model, batch, args.context),
        }
        times: dict[str, list[float]] = {name: [] for name in systems}
        for step in systems.values():
            timed(step, 2)  # warm-up
        for _ in range(args.steps // 4):
            for name, step in systems.items():
                times[name] += timed(step, 4)
        base = statistics.median(times["mlx-lm"])
        for name, samples in times.items():
            med = statistics.median(samples)
            print(
                f"B={batch:<3} ctx={args.context:<5} {name:<7} step p50 {med:7.1f} ms  "
                f"min {min(samples):7.1f}  ratio to mlx-lm {med / base:5.2f}"
            )
        del runner


if __name__ == "__main__":
    main()
