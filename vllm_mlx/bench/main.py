"""Top of `vllm-mlx bench`: a probe, or the baseline and/or the server sweep."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from vllm_mlx.bench.config import BASELINE_LABEL, SERVER_LABEL, BenchConfig
from vllm_mlx.bench.report import (
    append_json,
    ratio_line,
    render_cache_table,
    render_table,
    to_json_line,
)
from vllm_mlx.bench.runner import json_meta, output_stream, run_paired, run_sweep
from vllm_mlx.bench.stats import LevelStats

logger = logging.getLogger("vllm_mlx.bench")


def execute(cfg: BenchConfig) -> int:
    """Run a probe, or the baseline and/or the server sweep; 1 if any request failed."""
    if cfg.probe == "interference":
        from vllm_mlx.bench.interference import run_interference_probe

        return run_interference_probe(cfg)
    if cfg.probe is not None:
        from vllm_mlx.bench.probes import run_probe

        return run_probe(cfg)
    out = output_stream(cfg)
    results: list[LevelStats] = []

    def emit(stats: LevelStats) -> None:
        results.append(stats)
        logger.info(
            "%s at concurrency %d: %.2f output tok/s, %d of %d failed",
            stats.label, stats.concurrency, stats.output_tok_s, stats.failures, stats.requests,
        )  # fmt: skip
        if cfg.json_path is not None:
            append_json(cfg.json_path, [to_json_line(stats, json_meta(cfg, stats.label))])

    if cfg.compare_baseline:
        from vllm_mlx.bench.baseline import prepare_generator, release_memory  # imports MLX

        generator = prepare_generator(cfg)
        asyncio.run(run_paired(cfg, generator, emit))
        del generator
        release_memory()  # the sweep's other levels run without the baseline's model
        rest = tuple(level for level in cfg.sweep if level != 1)
        if rest:
            others = replace(cfg, concurrency=rest, warmup=0, compare_baseline=False)
            asyncio.run(run_sweep(others, emit))
    elif cfg.baseline:
        from vllm_mlx.bench.baseline import run_baseline

        emit(run_baseline(cfg))
    else:
        asyncio.run(run_sweep(cfg, emit))
    out.write(render_table(results))
    if cfg.compare_baseline:
        server_c1 = next(
            (s for s in results if s.label == SERVER_LABEL and s.concurrency == 1), None
        )
        baseline = next((s for s in results if s.label == BASELINE_LABEL), None)
        out.write(ratio_line(server_c1, baseline))
    out.write(render_cache_table(results))
    out.flush()
    return 1 if any(s.failures for s in results) else 0
