"""TTFT of the same image sent twice, with the vision cache on and off (issue 13).

Runs the engine in-process on a vision model: by default a random-weight
Qwen2-VL-style model built here with a benchmark-size vision tower (8 blocks,
a 448x448 image is 256 tokens; nothing is downloaded), or ``--model DIR`` (any
MLX-layout VLM). Each mode serves, on a fresh engine:

1. the image with question A (cold: the tower runs either way);
2. the same image and question A again: the prefix cache covers the image's KV,
   so only the tower (cache off) or nothing (cache on) runs before the first token;
3. the same image after a new text prefix: no KV to reuse, so the prefill runs in
   full; only the tower's output can be reused.

It prints TTFT per step and the ratio off/on for steps 2 and 3.

    .venv/bin/python scripts/bench_vision_cache.py [--model DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vllm_mlx.backend.blas import preload_blas

preload_blas()

from vllm_mlx.backend.loader import load_model  # noqa: E402
from vllm_mlx.backend.model import LoadedModel  # noqa: E402
from vllm_mlx.config import EngineConfig, ModelConfig  # noqa: E402
from vllm_mlx.engine.client import EngineClient  # noqa: E402
from vllm_mlx.engine.types import (  # noqa: E402
    EngineError,
    GenerationRequest,
    ImageInput,
    SamplingParams,
    TokenDelta,
)


def _image(seed: int) -> ImageInput:
    from tests.fixtures.tiny_vlms import make_image

    data = make_image(seed, (448, 448))
    return ImageInput(data, hashlib.sha256(data).hexdigest())


def _prompt(loaded: LoadedModel, prefix: str, image: ImageInput) -> list[int]:
    assert loaded.prompter is not None
    parts = [{"type": "text", "text": prefix}, {"type": "image"}]
    parts.append({"type": "text", "text": "What is in this picture?"})
    return loaded.prompter.encode_chat([{"role": "user", "content": parts}], [image])


async def _ttft(client: EngineClient, rid: str, prompt: list[int], image: ImageInput) -> float:
    sampling = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    request = GenerationRequest(
        request_id=rid, prompt_token_ids=tuple(prompt), sampling=sampling, images=(image,)
    )
    start = time.perf_counter()
    async for event in client.generate(request):
        if isinstance(event, EngineError):
            raise RuntimeError(event.message)
        if isinstance(event, TokenDelta) and event.token_ids:
            return time.perf_counter() - start
    raise RuntimeError("no token")


async def _run(loaded: LoadedModel, seed: int) -> tuple[float, float, float]:
    image = _image(seed)
    client = EngineClient(lambda: loaded, EngineConfig(prefill_chunk_tokens=2048))
    await client.start()
    try:
        cold = await _ttft(client, "cold", _prompt(loaded, "Look.", image), image)
        same = await _ttft(client, "same", _prompt(loaded, "Look.", image), image)
        fresh = await _ttft(client, "fresh", _prompt(loaded, f"New question {seed}.", image), image)
    finally:
        await client.stop()
    return cold, same, fresh


def _measure(path: Path, cache_size: int, repeats: int) -> list[tuple[float, float, float]]:
    loaded = load_model(ModelConfig(model=str(path), vision_cache_size=cache_size))
    asyncio.run(_run(loaded, 999))  # warm-up: MLX kernels and the processor
    return [asyncio.run(_run(loaded, seed)) for seed in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a VLM directory (MLX layout)")
    parser.add_argument("--repeats", type=int, default=3, help="images per mode (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            from tests.fixtures.tiny_vlms import build_tiny_vlm

            path = build_tiny_vlm(Path(tmp) / "bench-vlm", "qwen2_vl", bench=True)
        results = {
            "on": _measure(path, 100, args.repeats),
            "off": _measure(path, 0, args.repeats),
        }
    med = {
        mode: [statistics.median(r[i] for r in runs) for i in range(3)]
        for mode, runs in results.items()
    }
    print(f"model: {path if args.model else 'random Qwen2-VL-style, bench-size tower'}")
    print("median TTFT (ms)        cache on   cache off   off/on")
    for i, label in enumerate(("1 first time", "2 same prompt again", "3 new text, same image")):
        on, off = med["on"][i] * 1e3, med["off"][i] * 1e3
        print(f"{label:<24}{on:>8.1f}  {off:>10.1f}  {off / on:>7.1f}x")


if __name__ == "__main__":
    main()
