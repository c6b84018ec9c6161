"""--interference-probe: options, the window-cut ITL arithmetic, and a run on the fake server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.bench.fake_server import TEMPLATE_TOKENS, FakeServer
from vllm_mlx.bench import add_bench_arguments, run_bench
from vllm_mlx.bench.client import _apply_events, _record, _StreamState
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.interference import (
    CHATS_AFTER,
    CHATS_ALONE,
    LONG_ALONE,
    LONG_DURING,
    LONG_MAX_TOKENS,
    SCENARIOS,
    ScenarioRun,
    ScenarioStats,
    chat_text,
    itls_after,
    long_text,
    scenario_stats,
    verdict,
)
from vllm_mlx.bench.stats import RequestRecord, chunk_itl_times, chunk_itls


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm-mlx bench")
    add_bench_arguments(parser)
    return parser


def _run(argv: list[str]) -> int:
    return run_bench(_parser().parse_args([*argv, "--no-progress"]))


def _json_rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- options -------------------------------------------------------------------------------


def test_defaults_and_parsing() -> None:
    args = _parser().parse_args([])
    assert (args.interference_probe, args.long_prompt_tokens, args.interference_delay) == (
        0, 6000, 2.0,
    )  # fmt: skip
    argv = ["--interference-probe", "4", "--long-prompt-tokens", "800"]
    argv += ["--interference-delay", "0.5"]
    args = _parser().parse_args(argv)
    cfg = BenchConfig(**{name: getattr(args, name) for name in vars(BenchConfig())})
    assert (cfg.interference_probe, cfg.long_prompt_tokens, cfg.interference_delay) == (4, 800, 0.5)
    assert cfg.probe == "interference"
    help_text = " ".join(_parser().format_help().split())
    for option in ("--interference-probe", "--long-prompt-tokens", "--interference-delay"):
        assert option in help_text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interference_probe": -1}, "--interference-probe must be >= 0"),
        ({"long_prompt_tokens": 0}, "--long-prompt-tokens"),
        ({"interference_delay": -0.1}, "--interference-delay"),
        ({"interference_probe": 2, "ttft_probe": True}, "--ttft-probe and --interference-probe"),
        (
            {"interference_probe": 2, "blocks_probe": 2, "shared_prefix_tokens": 8},
            "--blocks-probe and --interference-probe are separate runs: pick one",
        ),
        ({"interference_probe": 2, "baseline": True}, "--baseline"),
    ],
)
def test_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)  # type: ignore[arg-type]


def test_two_probes_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--interference-probe", "2", "--ttft-probe"]) == 2
    assert "pick one" in capsys.readouterr().err


def test_prompts_are_distinct_per_request_scenario_and_run() -> None:
    cfg = BenchConfig(prompt_tokens=20, long_prompt_tokens=300)
    chats = {chat_text(cfg, n, tag, i) for n in ("n1", "n2") for tag in "ab" for i in range(3)}
    assert len(chats) == 12 and all(len(c.split()) == 20 for c in chats)
    longs = {long_text(cfg, n, tag) for n in ("n1", "n2") for tag in "ab"}
    assert len(longs) == 4 and all(len(t.split()) == 300 for t in longs)
    assert chat_text(cfg, "n1", "a", 0) == chat_text(cfg, "n1", "a", 0)  # deterministic


# --- per-token times and the window cut ----------------------------------------------------


def test_itl_times_align_with_itl_values() -> None:
    times = [1.0, 1.1, 1.3, 1.4]
    assert chunk_itl_times(times, [None] * 4) == (1.1, 1.3, 1.4)
    counts = [1, 2, 0, 1]  # known tokens per chunk: spread like chunk_itls
    values, _ = chunk_itls(times, counts, None)
    ends = chunk_itl_times(times, counts)
    assert ends == (1.1, 1.1, 1.4) and len(ends) == len(values)
    assert chunk_itl_times([1.0], [1]) == ()


def test_stream_records_arrival_times_and_calls_on_output() -> None:
    calls: list[int] = []
    state = _StreamState(start=0.0, on_output=lambda: calls.append(1))
    _apply_events([json.dumps({"choices": [{"delta": {"role": "assistant"}}]})], 0.1, state)
    for now in (0.2, 0.25, 0.4):
        _apply_events([json.dumps({"choices": [{"delta": {"content": "x"}}]})], now, state)
    _apply_events(["[DONE]"], 0.4, state)
    record = _record(state)
    assert len(calls) == 3  # output chunks only, not the role chunk
    assert record.token_times == (0.2, 0.25, 0.4)
    assert record.itl_times == (0.25, 0.4) and len(record.itl_s) == 2


def _chat(itls: tuple[float, ...], ends: tuple[float, ...], ttft: float = 0.1) -> RequestRecord:
    return RequestRecord(
        ok=True, ttft_s=ttft, e2e_s=ttft + sum(itls), itl_s=itls, itl_times=ends,
        output_tokens=len(itls) + 1,
    )  # fmt: skip


def test_itls_after_cuts_at_the_long_prompts_send_time() -> None:
    a = _chat((0.01, 0.02, 0.30, 0.04), (10.1, 10.2, 10.5, 10.6))
    b = _chat((0.05, 0.06), (10.3, 10.45))
    broken = RequestRecord(ok=False, error="x", itl_s=(9.0,), itl_times=(11.0,))
    # The long prompt went out at 10.4: the gap closed at 10.45 straddles it and counts.
    assert itls_after([a, b, broken], 10.4) == [0.30, 0.04, 0.06]
    assert itls_after([a, b], 11.0) == []
    assert itls_after([a], 0.0) == list(a.itl_s)


def _long(ttft: float, prompt: int = 6012) -> RequestRecord:
    return RequestRecord(ok=True, ttft_s=ttft, e2e_s=ttft + 0.1, prompt_tokens=prompt)


def _runs(
    during_window: float, after_ttft: float, long_ttfts: tuple[float, float, float]
) -> dict[str, ScenarioStats]:
    """Hand-made runs: steady 20-30 ms ITLs, ``during_window`` ITLs after the long prompt."""
    steady = (0.02, 0.02, 0.02, 0.03)
    alone = ScenarioRun(CHATS_ALONE, (_chat(steady, (1, 2, 3, 4)),) * 2, None, 0.0, None)
    solo = ScenarioRun(LONG_ALONE, (), _long(long_ttfts[0]), None, 10.0)
    during = ScenarioRun(
        LONG_DURING,
        (_chat((0.02, 0.02, during_window, during_window), (20.1, 20.2, 20.6, 20.7)),) * 2,
        _long(long_ttfts[1]),
        20.0,
        20.3,
    )
    after = ScenarioRun(
        CHATS_AFTER,
        (_chat(steady, (32.1, 32.2, 32.3, 32.4), after_ttft), _chat(steady, (1, 2, 3, 4))),
        _long(long_ttfts[2]),
        32.0,
        30.0,
    )
    return {run.scenario: scenario_stats(run) for run in (alone, solo, during, after)}


def test_scenario_stats_and_verdict_pass() -> None:
    stats = _runs(0.04, 0.5, (2.0, 2.5, 2.9))
    during = stats[LONG_DURING]
    assert (during.window_itl_count, during.itl_count) == (4, 8)
    assert during.window_itl_ms_p95 == pytest.approx(40.0)
    assert during.long_offset_ms == pytest.approx(300.0) and during.long_done_before_chats is None
    after = stats[CHATS_AFTER]
    assert after.window_itl_count is None  # chats sent after the long prompt: no cut
    assert after.chat_ttft_ms == pytest.approx((500.0, 100.0)) and after.chat_ttft_ms_max == 500
    assert after.long_offset_ms == pytest.approx(-2000.0) and after.long_done_before_chats is False
    assert stats[LONG_ALONE].long_prompt_tokens == 6012 and stats[CHATS_ALONE].long_ok is None
    a, b, c_during, c_after = verdict(stats)
    alone_p95 = stats[CHATS_ALONE].itl_ms_p95
    assert alone_p95 is not None and a.value == pytest.approx(40.0 / alone_p95)
    assert a.passed and b.passed and c_during.passed and c_after.passed
    assert b.value == pytest.approx(500.0) and b.limit == 5000.0
    assert c_during.value == pytest.approx(1.25) and c_after.value == pytest.approx(1.45)


def test_verdict_fails_and_reports_missing_data() -> None:
    stats = _runs(0.2, 6.0, (2.0, 3.5, 3.1))
    a, b, c_during, c_after = verdict(stats)
    assert (a.passed, b.passed, c_during.passed, c_after.passed) == (False, False, False, False)
    assert c_during.value == pytest.approx(1.75)
    no_window = _runs(0.2, 6.0, (2.0, 3.5, 3.1))
    no_window[LONG_DURING] = scenario_stats(
        ScenarioRun(LONG_DURING, (_chat((0.02,), (20.1,)),), _long(3.0), 20.0, 20.3)
    )
    assert no_window[LONG_DURING].window_itl_count == 0
    assert verdict(no_window)[0].passed is None and verdict(no_window)[0].value is None


# --- against the fake server ---------------------------------------------------------------

_ARGV = ["--interference-probe", "2", "--long-prompt-tokens", "300", "--interference-delay"]
_ARGV += ["0.2", "--prompt-tokens", "10", "--max-tokens", "16"]


def test_probe_runs_the_four_scenarios(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["--base-url", fake_server.url("slow"), *_ARGV]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("interference probe: K=2 chats of ~10 tokens (max_tokens 16)")
    assert f"usage.prompt_tokens {300 + TEMPLATE_TOKENS}" in lines[0]
    assert "runtime mode batched" in lines[0]
    assert [line.split("  ")[0] for line in lines[4:8]] == list(SCENARIOS)
    assert "verdict (issue 16 acceptance criteria):" in lines
    verdicts = [line for line in lines if line.startswith("(")]
    assert [v.split(")")[0] for v in verdicts] == ["(a", "(b", "(c during", "(c after"]
    assert all(v.endswith(("PASS", "FAIL")) for v in verdicts)
    # The long prompt (~60 ms of fake prefill) ended before the chats, 0.2 s later.
    assert "did not overlap" in out

    bodies = fake_server.state.bodies
    assert len(bodies) == 2 + 1 + 3 + 3
    assert len({b["messages"][0]["content"] for b in bodies}) == 9  # nothing reused
    longs = [b for b in bodies if len(b["messages"][0]["content"].split()) == 300]
    assert len(longs) == 3 and all(b["max_tokens"] == LONG_MAX_TOKENS for b in longs)
    assert fake_server.state.max_in_flight == 3  # the long prompt joined the running chats

    rows = _json_rows(out)
    assert all(r["probe"] == "interference" and r["interference_k"] == 2 for r in rows)
    requests = [r for r in rows if r["kind"] == "request"]
    assert [(r["scenario"], r["role"]) for r in requests] == [
        (CHATS_ALONE, "chat"), (CHATS_ALONE, "chat"), (LONG_ALONE, "long"),
        (LONG_DURING, "chat"), (LONG_DURING, "chat"), (LONG_DURING, "long"),
        (CHATS_AFTER, "chat"), (CHATS_AFTER, "chat"), (CHATS_AFTER, "long"),
    ]  # fmt: skip
    # The fake cache matches the role token, rarely a first word too: nothing real is reused.
    assert all(r["ok"] and isinstance(n := r["cached_tokens"], int) and n < 5 for r in requests)
    scenarios = {r["scenario"]: r for r in rows if r["kind"] == "scenario"}
    assert list(scenarios) == list(SCENARIOS)
    assert scenarios[CHATS_ALONE]["itl_count"] == 2 * 15
    during = scenarios[LONG_DURING]
    assert isinstance(during["window_itl_count"], int) and during["window_itl_count"] > 0
    assert during["long_prompt_tokens"] == 300 + TEMPLATE_TOKENS
    assert scenarios[CHATS_AFTER]["long_done_before_chats"] is True
    summary = rows[-1]
    assert summary["kind"] == "summary" and summary["requests_failed"] == 0
    criteria = summary["criteria"]
    assert isinstance(criteria, list) and [c["name"] for c in criteria] == [
        "a", "b", "c during", "c after",
    ]  # fmt: skip
    assert all(c["value"] is not None and c["passed"] is not None for c in criteria)


def test_probe_json_file_and_failures_exit_1(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "interference.jsonl"
    argv = ["--base-url", fake_server.url("fail"), *_ARGV, "--json", str(path)]
    assert _run(argv) == 1  # every request fails, and none hangs waiting for a first token
    out = capsys.readouterr().out
    assert "HTTP 500" in out and "long prompt failed" in out
    assert out.count("n/a") == 4
    rows = _json_rows(path.read_text())
    assert rows[-1]["requests_failed"] == 9 and rows[-1]["all_passed"] is False
