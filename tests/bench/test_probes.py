"""--ttft-probe and --blocks-probe against the fake server, and the blocks arithmetic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.bench.fake_server import BLOCKS_PER_REQUEST, FAKE_BLOCK_SIZE, FakeServer
from vllm_mlx.bench import add_bench_arguments, run_bench
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.probes import ProbeRequest, estimate_blocks, ttft_probe_texts


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vllm-mlx bench")
    add_bench_arguments(parser)
    return run_bench(parser.parse_args([*argv, "--no-progress"]))


def _json_rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_ttft_probe_texts_share_the_long_prompt() -> None:
    cfg = BenchConfig(prompt_tokens=50)
    base, extended = ttft_probe_texts(cfg, "n1")
    assert len(base.split()) == 50 and extended.startswith(base + " ")
    assert len(extended.split()) == 50 + 16
    assert ttft_probe_texts(cfg, "n2")[0] != base  # a new nonce gives a cold prompt


def test_ttft_probe_reports_cold_warm_and_prefix(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--base-url", fake_server.url("ok"), "--ttft-probe", "--prompt-tokens", "1000"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("TTFT probe: ~1000-token prompt")
    assert "runtime mode batched" in lines[0]
    assert [line.split(":")[0] for line in lines[1:6]] == [
        "cold TTFT", "warm TTFT", "prefix TTFT", "warm/cold", "prefix/cold",
    ]  # fmt: skip
    bodies = fake_server.state.bodies
    assert [b["max_tokens"] for b in bodies] == [1, 1, 1]
    assert bodies[0]["messages"] == bodies[1]["messages"]
    assert bodies[2]["messages"][0]["content"].startswith(bodies[0]["messages"][0]["content"])
    rows = _json_rows(out)
    assert [r["kind"] for r in rows] == ["cold", "warm", "prefix", "summary"]
    assert all(r["probe"] == "ttft" and r["max_tokens"] == 1 for r in rows)
    cold, warm, prefix, summary = rows
    assert cold["cached_tokens"] == 0 and warm["cached_tokens"] == 1006
    assert prefix["cached_tokens"] == 1001  # the prompt, without its end and "generation" tokens
    # The fake server "prefills" uncached tokens only, so the cache shows in TTFT.
    assert summary["warm_cold_ratio"] is not None and summary["warm_cold_ratio"] < 0.5
    assert summary["prefix_cold_ratio"] is not None and summary["prefix_cold_ratio"] < 0.5
    assert summary["cold_ttft_ms"] == cold["ttft_ms"]


def test_ttft_probe_rounds_and_json_file(fake_server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    argv = ["--base-url", fake_server.url("plain"), "--ttft-probe", "--prompt-tokens", "50"]
    assert _run([*argv, "--num-prompts", "2", "--json", str(path)]) == 0
    rows = _json_rows(path.read_text())
    assert [r["round"] for r in rows[:-1]] == [1, 1, 1, 2, 2, 2]
    assert len({b["messages"][0]["content"] for b in fake_server.state.bodies}) == 4
    summary = rows[-1]
    assert summary["rounds"] == 2 and summary["warm_cached_tokens"] is None  # not reported
    assert summary["server"]["available"] is False  # type: ignore[index]


def test_ttft_probe_failure_exits_1(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["--base-url", fake_server.url("fail"), "--ttft-probe"]) == 1
    out = capsys.readouterr().out
    assert "cold TTFT:" in out and "absent" in out and "HTTP 500" in out


def test_blocks_probe_compares_peak_blocks_with_the_formula(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--base-url", fake_server.url("hold"), "--blocks-probe", "3"]
    argv += ["--shared-prefix-tokens", "40", "--prompt-tokens", "6", "--max-tokens", "8"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    bodies = fake_server.state.bodies
    assert len(bodies) == 4 and fake_server.state.max_in_flight == 3
    assert len({b["messages"][0]["content"] for b in bodies}) == 1  # one shared system prompt
    assert len({b["messages"][1]["content"] for b in bodies}) == 4  # distinct suffixes
    rows = _json_rows(out)
    assert [r["kind"] for r in rows] == ["single"] + ["concurrent"] * 3 + ["summary"]
    summary = rows[-1]
    # Fake tokens: <system> 40 words </> <user> 6 words </> + 5 = 55 prompt + 8 output.
    prefix = 1 + 40 + 1 + 1  # the concurrent requests' cached tokens
    suffix = 55 + 8 - (prefix // FAKE_BLOCK_SIZE) * FAKE_BLOCK_SIZE
    expected = prefix // FAKE_BLOCK_SIZE + 3 * -(-suffix // FAKE_BLOCK_SIZE)
    assert (summary["prefix_tokens"], summary["tokens_per_request"]) == (prefix, 63)
    assert summary["suffix_tokens"] == suffix and summary["expected_blocks"] == expected
    assert summary["blocks_held"] == 3 * BLOCKS_PER_REQUEST
    assert summary["single_blocks_held"] == BLOCKS_PER_REQUEST
    assert summary["ratio"] == pytest.approx(3 * BLOCKS_PER_REQUEST / expected)
    assert f"= {3 * BLOCKS_PER_REQUEST} / (10 + 3 x 6 = {expected}) = " in out
    assert "blocks held by 3 concurrent ÷ (1 prefix + 3 suffixes)" in out
    assert "prefix_tokens = 43 (usage cached_tokens)" in out


def test_blocks_probe_without_status_or_cached_tokens(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--base-url", fake_server.url("plain"), "--blocks-probe", "2"]
    argv += ["--shared-prefix-tokens", "20", "--prompt-tokens", "4", "--max-tokens", "2"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "server status absent (HTTP 404)" in out
    assert "estimate (--shared-prefix-tokens)" in out
    assert "= absent (no cache.block_size from the server)" in out
    assert _json_rows(out)[-1]["ratio"] is None


def _request(prompt: int, output: int, cached: int | None) -> ProbeRequest:
    return ProbeRequest("concurrent", 1, True, None, 1.0, prompt, output, cached)


def test_estimate_blocks_arithmetic() -> None:
    requests = [_request(540, 32, 520), _request(541, 32, 530)]
    e = estimate_blocks(4, 16, 60, requests, shared_prefix_tokens=512)
    assert (e.prefix_tokens, e.prefix_source, e.prefix_blocks) == (520, "usage cached_tokens", 32)
    assert (e.tokens_per_request, e.suffix_tokens, e.suffix_blocks) == (573, 573 - 512, 4)
    assert e.expected_blocks == 32 + 4 * 4 and e.ratio == pytest.approx(60 / 48)


def test_estimate_blocks_falls_back_and_tolerates_missing_inputs() -> None:
    no_cache = estimate_blocks(2, 16, 80, [_request(100, 8, 0)], shared_prefix_tokens=64)
    assert no_cache.prefix_tokens == 64 and no_cache.prefix_source.startswith("estimate")
    assert no_cache.expected_blocks == 4 + 2 * 3  # 108 - 64 = 44 tokens -> 3 blocks each
    assert estimate_blocks(2, None, 80, [_request(100, 8, 0)], 64).ratio is None
    assert estimate_blocks(2, 16, None, [_request(100, 8, 0)], 64).ratio is None
    empty = estimate_blocks(2, 16, 80, [], 64)
    assert empty.tokens_per_request is None and empty.expected_blocks is None
