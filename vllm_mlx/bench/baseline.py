"""The "mlx-lm direct" baseline: the same prompts through mlx-lm in-process, no server.

The model is loaded exactly as the server loads it (``backend.loader``), the
prompt goes through the chat template as the server applies it, and decoding
is greedy (or at ``--temperature``) with EOS masked so every request yields
exactly ``--max-tokens`` tokens, like ``ignore_eos`` on the server. Requests
run one after another (concurrency 1); with ``--compare-baseline`` they alternate
with the server's concurrency-1 requests (see ``runner.run_paired_level``).

This module is imported only when a baseline is asked for: it pulls in MLX.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from vllm_mlx.bench.config import BASELINE_LABEL, BenchConfig
from vllm_mlx.bench.runner import level_prompts, log_failures, warmup_prompts
from vllm_mlx.bench.stats import LevelStats, RequestRecord, chunk_itls, summarize

logger = logging.getLogger("vllm_mlx.bench")


def _preload_blas() -> None:
    """Load the fast BLAS before MLX is imported, as the server does."""
    try:
        from vllm_mlx.backend.blas import preload_blas
    except ImportError:
        logger.info("vllm_mlx.backend.blas is unavailable; MLX keeps its bundled BLAS")
        return
    preload_blas()


def load_baseline_model(cfg: BenchConfig) -> Any:
    """Load the baseline model the way the server does; returns a LoadedModel."""
    _preload_blas()
    from vllm_mlx.backend.loader import load_model
    from vllm_mlx.config import ModelConfig

    return load_model(ModelConfig(model=cfg.baseline_model, dtype=cfg.dtype))


@dataclass(frozen=True)
class DirectGenerator:
    """mlx-lm generation set up once per run, then timed request by request."""

    loaded: Any  # LoadedModel from the server's loader
    chat: Any  # backend.tokenizer.Tokenizer: the server's own chat-template path
    temperature: float  # 0 is greedy
    max_tokens: int  # tokens generated per request

    @classmethod
    def create(cls, loaded: Any, cfg: BenchConfig) -> DirectGenerator:
        from vllm_mlx.backend.tokenizer import Tokenizer

        return cls(
            loaded=loaded,
            chat=Tokenizer(loaded.tokenizer, loaded.eos_token_ids),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
        )

    def encode(self, prompt: str) -> list[int]:
        """Prompt ids exactly as the server builds them for one user message."""
        return list(self.chat.encode_chat([{"role": "user", "content": prompt}]))

    def time_one(self, prompt: str) -> RequestRecord:
        """Generate one completion with mlx-lm and time every token."""
        from vllm_mlx.backend.reference import reference_generate

        start = time.perf_counter()  # templating counts toward TTFT, as on the server
        ids = self.encode(prompt)
        steps = reference_generate(self.loaded, ids, self.max_tokens, self.temperature)
        times = [time.perf_counter() for _ in steps]  # one step = one token
        if not times:
            return RequestRecord(ok=False, error="mlx-lm produced no tokens")
        itls, _ = chunk_itls(times, [1] * len(times), len(times))
        return RequestRecord(
            ok=True,
            ttft_s=times[0] - start,
            e2e_s=times[-1] - start,
            itl_s=itls,
            prompt_tokens=len(ids),
            output_tokens=len(times),
        )


def _run_all(
    generator: DirectGenerator, prompts: Sequence[str], cfg: BenchConfig, tag: str
) -> tuple[list[RequestRecord], float]:
    """Run prompts one by one; returns records and wall time."""
    records: list[RequestRecord] = []
    start = time.perf_counter()
    for prompt in tqdm(prompts, desc=f"baseline {tag}", file=sys.stderr, disable=not cfg.progress):
        records.append(generator.time_one(prompt))
    return records, time.perf_counter() - start


def prepare_generator(cfg: BenchConfig) -> DirectGenerator:
    """Load the baseline model and run the warmup prompts through it."""
    loaded = load_baseline_model(cfg)
    logger.info("baseline: %s (%s, %s)", loaded.model_id, loaded.dtype, loaded.device)
    generator = DirectGenerator.create(loaded, cfg)
    if cfg.warmup:
        _run_all(generator, warmup_prompts(cfg), cfg, "warmup")
    return generator


def run_baseline(cfg: BenchConfig) -> LevelStats:
    """Load the model, warm up, and measure level 1's prompts through mlx-lm directly."""
    generator = prepare_generator(cfg)
    records, wall_s = _run_all(generator, level_prompts(cfg, 1), cfg, "c1")
    log_failures(records, "baseline")
    del generator
    release_memory()
    return summarize(BASELINE_LABEL, 1, records, wall_s)


def release_memory() -> None:
    """Hand the baseline's buffers back before the server sweep (unified memory on Macs)."""
    import gc

    import mlx.core as mx

    gc.collect()
    mx.clear_cache()
