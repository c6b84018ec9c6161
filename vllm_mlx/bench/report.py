"""Rendering of level statistics: a fixed-width table and JSON lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from vllm_mlx.bench.stats import LevelStats, decode_ratio
from vllm_mlx.bench.status import ServerLevelStatus

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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}%"


def _server(stats: LevelStats) -> ServerLevelStatus | None:
    return stats.server if stats.server is not None and stats.server.available else None


def _server_hit_rates(stats: LevelStats) -> str:
    server = _server(stats)
    if server is None or (server.hit_rate_before is None and server.hit_rate_after is None):
        return "-"
    return f"{_pct(server.hit_rate_before)}>{_pct(server.hit_rate_after)}"


def _blocks_peak(stats: LevelStats) -> str:
    server = _server(stats)
    if server is None or server.blocks_used_peak is None:
        return "-"
    total = "-" if server.blocks_total is None else str(server.blocks_total)
    return f"{server.blocks_used_peak}/{total}"


def _server_int(stats: LevelStats, name: str) -> str:
    server = _server(stats)
    value = None if server is None else getattr(server, name)
    return "-" if value is None else str(value)


# The prefix-cache table: client-side cached tokens per turn, then /v1/status figures.
_CACHE_COLUMNS: tuple[tuple[str, int, Callable[[LevelStats], str]], ...] = (
    ("label", 14, lambda s: s.label),
    ("conc", 5, lambda s: str(s.concurrency)),
    ("turns", 5, lambda s: str(s.turns)),
    ("cached tok", 10, lambda s: _num(s.mean_cached_tokens, 1)),
    ("hit rate", 8, lambda s: _pct(s.cache_hit_rate)),
    ("TTFT t1", 8, lambda s: _num(s.ttft_ms_p50_turn1, 1)),
    ("TTFT t2+", 8, lambda s: _num(s.ttft_ms_p50_later, 1)),
    ("cached t1", 9, lambda s: _num(s.mean_cached_tokens_turn1, 1)),
    ("cached t2+", 10, lambda s: _num(s.mean_cached_tokens_later, 1)),
    ("srv hit rate", 13, _server_hit_rates),
    ("blocks peak", 11, _blocks_peak),
    ("running", 7, lambda s: _server_int(s, "num_running_peak")),
    ("mode", 8, lambda s: _server_int(s, "mode")),
)


def _row(cells: Sequence[str], columns: Sequence[tuple[str, int, object]] = _COLUMNS) -> str:
    parts: list[str] = []
    for (_, width, _), cell in zip(columns, cells, strict=True):
        parts.append(cell.ljust(width) if not parts else cell.rjust(width))
    return " ".join(parts).rstrip()


def _grid(
    rows: Sequence[LevelStats], columns: Sequence[tuple[str, int, Callable[[LevelStats], str]]]
) -> list[str]:
    """Header, rule and one line per level of a fixed-width table."""
    lines = [_row([c[0] for c in columns], columns), _row(["-" * c[1] for c in columns], columns)]
    lines.extend(_row([c[2](s) for c in columns], columns) for s in rows)
    return lines


def render_table(results: Sequence[LevelStats]) -> str:
    """A fixed-width table, one row per level; times in ms, '-' where no data."""
    lines = _grid(results, _COLUMNS)
    notes = [
        f"ITL of '{s.label}' at concurrency {s.concurrency} is per chunk: "
        "the stream did not say how many tokens each chunk held"
        for s in results
        if s.itl_basis == "chunk"
    ]
    return "\n".join(lines + notes) + "\n"


def render_cache_table(results: Sequence[LevelStats]) -> str:
    """The prefix-cache table of the server levels ("" when there is nothing to show).

    TTFT t1 / t2+ are p50s of first turns and of later turns; cached tokens
    come from usage; "srv hit rate" is the server's lifetime cache.hit_rate
    before>after the level; "blocks peak" is max cache.blocks_used / blocks_total
    and "running" the max num_running seen while polling /v1/status.
    """
    rows = [s for s in results if s.server is not None or s.mean_cached_tokens is not None]
    if not rows:
        return ""
    lines = ["", "prefix cache (usage) and server status (GET /v1/status)"]
    lines += _grid(rows, _CACHE_COLUMNS)
    for s in rows:
        if s.server is not None and not s.server.available:
            lines.append(f"server status at concurrency {s.concurrency}: absent ({s.server.error})")
    if any(s.mean_cached_tokens is None for s in rows):
        lines.append("cached tok '-': the server sent no usage.prompt_tokens_details.cached_tokens")
    return "\n".join(lines) + "\n"


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
