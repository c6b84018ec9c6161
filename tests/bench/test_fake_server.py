"""End-to-end bench flow against the fake OpenAI streaming server (tests/bench/fake_server.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from tests.bench.fake_server import TEMPLATE_TOKENS, TOKEN_DELAY_S, FakeServer
from vllm_mlx.bench import add_bench_arguments, run_bench
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.runner import run_paired, run_sweep
from vllm_mlx.bench.stats import LevelStats, RequestRecord


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm-mlx bench")
    add_bench_arguments(parser)
    return parser.parse_args([*argv, "--no-progress"])


def test_sweep_reports_every_level_and_keeps_concurrency(fake_server: FakeServer) -> None:
    cfg = BenchConfig(
        base_url=fake_server.url("ok"), concurrency=(1, 3), num_prompts=6, prompt_tokens=20,
        max_tokens=8, warmup=2, progress=False,
    )  # fmt: skip
    results = asyncio.run(run_sweep(cfg))
    assert [s.concurrency for s in results] == [1, 3]
    for stats in results:
        assert (stats.requests, stats.failures) == (6, 0)
        assert stats.output_tokens == 6 * 8
        assert stats.mean_prompt_tokens == 20 + TEMPLATE_TOKENS
        assert stats.itl_basis == "token"
        assert stats.ttft_ms_p50 is not None and stats.ttft_ms_p50 > 0
        assert stats.itl_ms_p50 is not None and stats.itl_ms_p50 >= TOKEN_DELAY_S * 1000 * 0.5
        assert stats.tpot_ms_p50 is not None and stats.decode_tok_s_p50 is not None
        assert stats.output_tok_s == pytest.approx(stats.output_tokens / stats.wall_s)
    assert len(fake_server.state.bodies) == 2 + 6 + 6  # warmup + two levels
    assert fake_server.state.max_in_flight == 3
    body = fake_server.state.bodies[-1]
    assert body["stream"] is True and body["ignore_eos"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 8 and body["temperature"] == 0.0


def test_failures_are_counted_for_http_errors(
    fake_server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = BenchConfig(
        base_url=fake_server.url("fail"), concurrency=(2,), num_prompts=4, progress=False
    )
    [stats] = asyncio.run(run_sweep(cfg))
    assert (stats.requests, stats.failures, stats.output_tokens) == (4, 4, 0)
    assert stats.ttft_ms_p50 is None and stats.request_s == 0.0
    assert "c2: 4 of 4 requests failed" in caplog.text
    assert "HTTP 500" in caplog.text and "boom" in caplog.text


def test_failures_are_counted_for_broken_streams(
    fake_server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = BenchConfig(
        base_url=fake_server.url("broken"), concurrency=(1,), num_prompts=3, max_tokens=6,
        progress=False,
    )  # fmt: skip
    [stats] = asyncio.run(run_sweep(cfg))
    assert (stats.requests, stats.failures) == (3, 3)
    assert "ended without [DONE]" in caplog.text


def test_cli_flow_writes_table_and_json(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.jsonl"
    argv = ["--base-url", fake_server.url("ok"), "--concurrency", "1,2", "--num-prompts", "3"]
    argv += ["--max-tokens", "5", "--api-key", "sekrit", "--json", str(out)]
    assert run_bench(_parse(argv)) == 0
    printed = capsys.readouterr().out
    table = printed.split("\n\n")[0].splitlines()  # the prefix-cache table follows a blank line
    assert table[0].split()[:4] == ["label", "conc", "reqs", "fail"]
    assert [line.split()[:4] for line in table[2:]] == [
        ["server", "1", "3", "0"],
        ["server", "2", "3", "0"],
    ]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["label"], r["concurrency"], r["output_tokens"]) for r in rows] == [
        ("server", 1, 15),
        ("server", 2, 15),
    ]
    assert rows[0]["base_url"] == fake_server.url("ok") and rows[0]["max_tokens"] == 5
    assert fake_server.state.headers[0]["authorization"] == "Bearer sekrit"
    assert fake_server.state.headers[0]["x-request-id"].startswith("bench-c1-")


def test_cli_exit_status_is_1_when_requests_fail(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--base-url", fake_server.url("fail"), "--concurrency", "1", "--num-prompts", "2"]
    argv += ["--json", "-"]
    assert run_bench(_parse(argv)) == 1
    captured = capsys.readouterr()
    [row] = [json.loads(line) for line in captured.out.splitlines()]
    assert row["failures"] == 2
    assert "server" in captured.err  # the table moved to stderr


def test_compare_baseline_pairs_level_1_then_sweeps_and_prints_ratio(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fixtures.tiny_models import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny")
    argv = ["--base-url", fake_server.url("ok"), "--concurrency", "2", "--num-prompts", "2"]
    argv += ["--max-tokens", "4", "--compare-baseline", "--baseline-model", str(model_dir)]
    assert run_bench(_parse(argv)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[2:5]] == [["mlx-lm", "direct"], ["server", "1"],
                                                         ["server", "2"]]  # fmt: skip
    assert lines[5].startswith("server/baseline decode tok/s at concurrency 1: ")
    float(lines[5].rsplit(" ", 1)[1])  # a number, not "n/a"


class _RecordingTimer:
    """A stand-in baseline that notes how many server requests preceded each of its calls."""

    def __init__(self, fake_server: FakeServer) -> None:
        self._server = fake_server
        self.calls: list[tuple[str, int]] = []

    def time_one(self, prompt: str) -> RequestRecord:
        self.calls.append((prompt, len(self._server.state.bodies)))
        return RequestRecord(ok=True, ttft_s=0.01, e2e_s=0.05, itl_s=(0.01,) * 4, output_tokens=5)


def test_paired_level_alternates_baseline_and_server_on_the_same_prompts(
    fake_server: FakeServer,
) -> None:
    cfg = BenchConfig(
        base_url=fake_server.url("ok"), concurrency=(1,), num_prompts=3, prompt_tokens=10,
        max_tokens=4, warmup=1, progress=False, compare_baseline=True,
    )  # fmt: skip
    timer = _RecordingTimer(fake_server)
    reported: list[LevelStats] = []
    asyncio.run(run_paired(cfg, timer, reported.append))
    # Baseline call i comes after the warmup and exactly i measured server requests.
    assert [before for _, before in timer.calls] == [1, 2, 3]
    sent = [body["messages"][-1]["content"] for body in fake_server.state.bodies[1:]]
    assert sent == [prompt for prompt, _ in timer.calls]
    baseline, server = reported
    assert (baseline.label, baseline.requests, server.label, server.requests) == (
        "mlx-lm direct", 3, "server", 3,
    )  # fmt: skip
    assert baseline.wall_s > 0 and server.wall_s > 0 and server.server is not None


def test_baseline_alone_sends_nothing_to_the_server(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fixtures.tiny_models import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny")
    argv = ["--base-url", fake_server.url("ok"), "--num-prompts", "1", "--max-tokens", "3"]
    assert run_bench(_parse([*argv, "--baseline", "--baseline-model", str(model_dir)])) == 0
    assert fake_server.state.bodies == []
    assert capsys.readouterr().out.splitlines()[2].startswith("mlx-lm direct")
