"""Shared prefixes, multi-turn conversations and /v1/status against the fake server."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest

from tests.bench.fake_server import (
    BLOCKS_PER_REQUEST,
    FAKE_BLOCK_SIZE,
    FAKE_BLOCKS_TOTAL,
    FAKE_MODE,
    FakeServer,
)
from vllm_mlx.bench import add_bench_arguments, run_bench
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.runner import run_sweep


def _cfg(server: FakeServer, route: str = "ok", **kwargs: object) -> BenchConfig:
    settings: dict[str, object] = {
        "base_url": server.url(route), "num_prompts": 4, "prompt_tokens": 10, "max_tokens": 4,
        "progress": False, "status_interval": 0.01, **kwargs,
    }  # fmt: skip
    return BenchConfig(**settings)  # type: ignore[arg-type]


def test_shared_prefix_is_sent_as_one_system_message_per_level(fake_server: FakeServer) -> None:
    cfg = _cfg(fake_server, concurrency=(1, 2), shared_prefix_tokens=30)
    results = asyncio.run(run_sweep(cfg))
    bodies = fake_server.state.bodies
    assert len(bodies) == 8
    systems = [b["messages"][0] for b in bodies]
    assert {s["role"] for s in systems} == {"system"}
    assert all(len(s["content"].split()) == 30 for s in systems)
    assert len({s["content"] for s in systems[:4]}) == 1  # one prefix within a level
    assert systems[0] != systems[4]  # and another one for the next level
    assert len({b["messages"][1]["content"] for b in bodies[:4]}) == 4
    for stats in results:
        # The first request of a level misses (but for the shared "<system>" token); the
        # others reuse the 30-word system message plus the role and end tokens around it.
        assert stats.mean_cached_tokens == pytest.approx((1 + 3 * 33) / 4, abs=1.0)
        assert stats.cache_hit_rate is not None and 0.4 < stats.cache_hit_rate < 0.6
        assert stats.mean_prompt_tokens == 30 + 10 + 2 + 2 + 5


def test_multi_turn_resends_the_history_with_the_replies(fake_server: FakeServer) -> None:
    cfg = _cfg(fake_server, concurrency=(2,), num_prompts=2, multi_turn=3)
    [stats] = asyncio.run(run_sweep(cfg))
    assert (stats.requests, stats.failures, stats.turns) == (6, 0, 3)
    by_length: dict[int, list[list[dict[str, str]]]] = {}
    for body in fake_server.state.bodies:
        by_length.setdefault(len(body["messages"]), []).append(body["messages"])
    assert sorted(by_length) == [1, 3, 5]  # user / user, assistant, user / ... five
    for last in by_length[5]:
        assert [m["role"] for m in last] == ["user", "assistant"] * 2 + ["user"]
        assert last[1]["content"] == " t0 t1 t2 t3"  # the reply the bench received
        assert last[:3] in by_length[3]  # turn 3 extends turn 2's prompt
    ids = [h["x-request-id"] for h in fake_server.state.headers]
    assert sorted(ids) == sorted(f"bench-c2-{i}-t{t}" for i in range(2) for t in (1, 2, 3))
    assert [t.turn for t in stats.per_turn] == [1, 2, 3]
    assert stats.mean_cached_tokens_later is not None and stats.mean_cached_tokens_turn1 is not None
    assert stats.mean_cached_tokens_later > stats.mean_cached_tokens_turn1 + 10
    assert stats.ttft_ms_p50_turn1 is not None and stats.ttft_ms_p50_later is not None


def test_a_failed_turn_ends_its_conversation(fake_server: FakeServer) -> None:
    cfg = _cfg(fake_server, "fail", concurrency=(1,), num_prompts=2, multi_turn=3)
    [stats] = asyncio.run(run_sweep(cfg))
    assert (stats.requests, stats.failures) == (2, 2)  # turn 1 of each, nothing after
    assert len(fake_server.state.bodies) == 2


def test_server_status_is_read_and_polled_around_each_level(fake_server: FakeServer) -> None:
    cfg = _cfg(fake_server, "hold", concurrency=(3,), num_prompts=3)
    [stats] = asyncio.run(run_sweep(cfg))
    server = stats.server
    assert server is not None and server.available and server.polls >= 3
    assert (server.mode, server.block_size, server.blocks_total) == (
        FAKE_MODE, FAKE_BLOCK_SIZE, FAKE_BLOCKS_TOTAL,
    )  # fmt: skip
    assert server.blocks_used_peak == 3 * BLOCKS_PER_REQUEST and server.num_running_peak == 3
    assert server.blocks_used_before == 0
    assert server.hit_rate_before == 0.0 and server.hit_rate_after is not None
    assert sum(server.hit_types.values()) == 3


@pytest.mark.parametrize("route", ["plain", "partial"])
def test_other_servers_do_not_crash_the_bench(
    fake_server: FakeServer, route: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="vllm-mlx bench")
    add_bench_arguments(parser)
    argv = ["--base-url", fake_server.url(route), "--concurrency", "2", "--num-prompts", "2"]
    argv += ["--max-tokens", "3", "--multi-turn", "2", "--shared-prefix-tokens", "12"]
    argv += ["--no-progress", "--json", "-", "--status-interval", "0.01"]
    assert run_bench(parser.parse_args(argv)) == 0
    captured = capsys.readouterr()
    [row] = [json.loads(line) for line in captured.out.splitlines()]
    assert row["failures"] == 0 and row["turns"] == 2 and row["multi_turn"] == 2
    server = row["server"]
    if route == "plain":
        assert server["available"] is False and server["error"] == "HTTP 404"
        assert row["mean_cached_tokens"] is None and row["cache_hit_rate"] is None
        assert "server status at concurrency 2: absent (HTTP 404)" in captured.err
    else:
        assert server["available"] is True and server["hit_rate_after"] is not None
        assert server["mode"] is None and server["blocks_used_peak"] is None
        assert row["mean_cached_tokens"] is not None
    assert "prefix cache (usage) and server status" in captured.err
