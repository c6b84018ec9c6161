"""Rendering of level statistics: a fixed-width table and JSON lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from vllm_mlx.bench.stats import LevelStats, decode_ratio

# (header, width, cell) per column; every cell is right-aligned except the label.
_COLUMNS: tuple[tuple[str, int, Callable[[LevelStats], str]], ...] = (
    ("label", 14, lambda s: s.label),
    ("conc", 5, lambda s: str(s.concurrency)),
    ("reqs", 5, lambda s: str(s.requests)),
    ("fail", 5, lambda s: str(s.failures)),
    ("out tok/s", 10, lambda s: _num(s.output_tok_s, 2)),
    ("req/s", 7, lambda s: _num(s.request_s, 2)),
    ("TTFT p50", 9, lambda s: _num(s.ttft_ms_p50, 1)),
    ("TTFT p95", 9, lambda s: _num(s.ttft_ms_p95, 1)),
    ("ITL p50", 8, lambda s: _num(s.itl_ms_p50, 2)),
    ("ITL p95", 8, lambda s: _num(s.itl_ms_p95, 2)),
    ("TPOT p50", 9, lambda s: _num(s.tpot_ms_p50, 2)),
    ("dec tok/s", 10, lambda s: _num(s.decode_tok_s_p50, 2)),
    ("prompt tok", 11, lambda s: _num(s.mean_prompt_tokens, 1)),
)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(cells: Sequence[str]) -> str:
    parts: list[str] = []
    for (_, width, _), cell in zip(_COLUMNS, cells, strict=True):
        parts.append(cell.ljust(width) if not parts else cell.rjust(width))
    return " ".join(parts).rstrip()


def render_table(results: Sequence[LevelStats]) -> str:
    """A fixed-width table, one row per level; times in ms, '-' where no data."""
    lines = [_row([c[0] for c in _COLUMNS]), _row(["-" * c[1] for c in _COLUMNS])]
    lines.extend(_row([c[2](s) for c in _COLUMNS]) for s in results)
    notes = [
        f"ITL of '{s.label}' at concurrency {s.concurrency} is per chunk: "
        "the stream did not say how many tokens each chunk held"
        for s in results
        if s.itl_basis == "chunk"
    ]
    return "\n".join(lines + notes) + "\n"


def to_json_line(stats: LevelStats, meta: dict[str, Any] | None = None) -> str:
    """One level as a single-line JSON object (run metadata merged in)."""
    return json.dumps({**asdict(stats), **(meta or {})}, sort_keys=True)


def append_json(path: str, lines: Sequence[str]) -> None:
    """Append JSON lines to ``path``; "-" writes them to stdout."""
    text = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def ratio_line(server: LevelStats | None, baseline: LevelStats | None) -> str:
    """The comparison line of --compare-baseline."""
    ratio = decode_ratio(server, baseline) if server and baseline else None
    value = "n/a (no successful requests on one side)" if ratio is None else f"{ratio:.2f}"
    return f"server/baseline decode tok/s at concurrency 1: {value}\n"
