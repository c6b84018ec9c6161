"""Table and JSON rendering of level statistics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vllm_mlx.bench.report import (
    append_json,
    ratio_line,
    render_cache_table,
    render_table,
    to_json_line,
)
from vllm_mlx.bench.stats import LevelStats, RequestRecord, failed, summarize
from vllm_mlx.bench.status import StatusSnapshot, parse_status, summarize_status


def _stats(label: str = "server", concurrency: int = 1) -> LevelStats:
    record = RequestRecord(
        ok=True, ttft_s=0.125, e2e_s=1.125, itl_s=(0.01,) * 10, prompt_tokens=130,
        output_tokens=11,
    )  # fmt: skip
    return summarize(label, concurrency, [record, failed("HTTP 500")], wall_s=2.0)


def test_table_is_fixed_width_with_one_row_per_level() -> None:
    lines = render_table([_stats("mlx-lm direct"), _stats(concurrency=4)]).splitlines()
    assert len(lines) == 4
    header, rule, first, second = lines
    assert header.startswith("label") and set(rule) <= {"-", " "}
    assert len(header) == len(rule)
    assert first.startswith("mlx-lm direct ")
    assert first.split()[2:] == [
        "1", "2", "1", "5.50", "0.50", "125.0", "125.0", "10.00", "10.00", "100.00", "10.00",
        "130.0",
    ]  # fmt: skip
    assert second.split()[:2] == ["server", "4"]
    # Columns line up: every numeric cell ends where its header ends.
    assert header.index("prompt tok") + len("prompt tok") == len(first)


def test_missing_values_render_as_dashes_and_chunk_basis_is_noted() -> None:
    empty = summarize("server", 2, [failed("x")], wall_s=1.0)
    table = render_table([replace(empty, itl_basis="chunk")])
    row = table.splitlines()[2].split()
    assert row[6:] == ["-"] * 7
    assert "concurrency 2 is per chunk" in table


def test_json_line_holds_stats_and_meta() -> None:
    line = to_json_line(_stats(), {"model": "m", "max_tokens": 11})
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["label"] == "server" and obj["model"] == "m" and obj["max_tokens"] == 11
    assert obj["ttft_ms_p50"] == pytest.approx(125.0)
    assert obj["failures"] == 1 and obj["itl_basis"] == "token"
    empty = json.loads(to_json_line(summarize("server", 1, [], wall_s=0.0)))
    assert empty["ttft_ms_p50"] is None


def test_append_json_appends_to_files_and_writes_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out.jsonl"
    append_json(str(path), ['{"a": 1}'])
    append_json(str(path), ['{"b": 2}', '{"c": 3}'])
    assert path.read_text().splitlines() == ['{"a": 1}', '{"b": 2}', '{"c": 3}']
    append_json("-", ['{"d": 4}'])
    assert capsys.readouterr().out == '{"d": 4}\n'


def test_ratio_line() -> None:
    server, baseline = _stats(), _stats("mlx-lm direct")
    assert ratio_line(server, baseline) == ("server/baseline decode tok/s at concurrency 1: 1.00\n")
    assert ratio_line(None, baseline).endswith("n/a (no successful requests on one side)\n")


def _server_status(blocks_used: int) -> dict[str, object]:
    return {"num_running": 3, "runtime": {"mode": "batched"},
            "cache": {"hit_rate": 0.5, "block_size": 16, "blocks_total": 512,
                      "blocks_used": blocks_used}}  # fmt: skip


def test_cache_table_shows_usage_and_server_figures() -> None:
    before = parse_status({**_server_status(0), "cache": {"hit_rate": 0.1}})
    server = summarize_status(before, [parse_status(_server_status(40))], parse_status({}))
    turn1 = RequestRecord(ok=True, ttft_s=0.2, e2e_s=0.3, prompt_tokens=100, cached_tokens=0)
    turn2 = replace(turn1, ttft_s=0.05, prompt_tokens=200, cached_tokens=150, turn=2)
    stats = replace(summarize("server", 2, [turn1, turn2], 1.0), server=server)
    lines = render_cache_table([_stats("mlx-lm direct"), stats]).splitlines()
    assert lines[0] == "" and lines[1].startswith("prefix cache")
    header, rule, row = lines[2:5]
    assert len(lines) == 5  # the baseline has no cache data: no row, no note
    assert len(header) == len(rule) == len(row)
    assert row.split() == [
        "server", "2", "2", "75.0", "50.0%", "200.0", "50.0", "0.0", "150.0", "10.0%>-",
        "40/512", "3", "batched",
    ]  # fmt: skip


def test_cache_table_marks_absent_server_status_and_usage() -> None:
    missing = StatusSnapshot(error="HTTP 404")
    stats = replace(_stats(), server=summarize_status(missing, [], missing))
    table = render_cache_table([stats])
    row = table.splitlines()[4].split()
    assert row[3:5] == ["-", "-"] and row[-4:] == ["-", "-", "-", "-"]
    assert "server status at concurrency 1: absent (HTTP 404)" in table
    assert "no usage.prompt_tokens_details.cached_tokens" in table
    assert render_cache_table([_stats()]) == ""  # neither usage nor status: no table


def test_json_line_nests_turns_and_server_status() -> None:
    missing = StatusSnapshot(error="HTTP 404")
    stats = replace(_stats(), server=summarize_status(missing, [], missing))
    obj = json.loads(to_json_line(stats))
    assert obj["server"]["available"] is False and obj["server"]["blocks_used_peak"] is None
    assert obj["per_turn"][0]["turn"] == 1 and obj["mean_cached_tokens"] is None
