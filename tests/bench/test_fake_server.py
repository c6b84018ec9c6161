"""End-to-end bench flow against a tiny fake OpenAI streaming server.

The fake server is a raw asyncio HTTP/1.1 server on a free port, run on its own
thread, so the bench (which calls ``asyncio.run``) drives it like a real one.
It tests the load generator, not our engine. Routes, by path prefix:

- ``/ok/v1/chat/completions``: one token per chunk, then usage and [DONE];
  some events are written in two halves to split them across reads.
- ``/fail/v1/chat/completions``: HTTP 500 with a JSON error body.
- ``/broken/v1/chat/completions``: a few tokens, then the connection closes
  without [DONE].
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vllm_mlx.bench import add_bench_arguments, run_bench
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.runner import run_sweep

TEMPLATE_TOKENS = 7  # what the fake "chat template" adds to the prompt's word count
TOKEN_DELAY_S = 0.002  # pause between streamed tokens


@dataclass
class FakeState:
    """What the fake server saw (mutated on the server thread only)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


def _sse(obj: Any) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return f"data: {data}\n\n".encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *header_lines = head.strip().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return request_line.split()[1], headers, body


async def _stream_tokens(writer: asyncio.StreamWriter, body: dict[str, Any], cut: bool) -> None:
    """Write a chat completion stream; ``cut`` stops half-way without [DONE]."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    writer.write(_sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    max_tokens = int(body["max_tokens"])
    for i in range(max_tokens):
        if cut and i == max_tokens // 2:
            return
        event = _sse({"choices": [{"index": 0, "delta": {"content": f" t{i}"}}]})
        if i % 3 == 0:  # split this event across two network writes
            writer.write(event[:9])
            await writer.drain()
            await asyncio.sleep(TOKEN_DELAY_S / 2)
            event = event[9:]
        writer.write(event)
        await writer.drain()
        await asyncio.sleep(TOKEN_DELAY_S)
    prompt_tokens = len(body["messages"][0]["content"].split()) + TEMPLATE_TOKENS
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens}
    writer.write(_sse({"choices": [], "usage": usage}) + _sse("[DONE]"))
    await writer.drain()


def _handler(state: FakeState) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            path, headers, raw = await _read_request(reader)
            body = json.loads(raw)
            state.bodies.append(body)
            state.headers.append(headers)
            if path.startswith("/fail/"):
                error = b'{"error": {"message": "boom", "type": "server_error"}}'
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(error)}\r\nconnection: close\r\n\r\n".encode()
                    + error
                )
            else:
                await _stream_tokens(writer, body, cut=path.startswith("/broken/"))
            await writer.drain()
        finally:
            state.in_flight -= 1
            writer.close()
            await writer.wait_closed()

    return handle


@dataclass(frozen=True)
class FakeServer:
    port: int
    state: FakeState

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/v1"


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """Run the fake server on a free port in a background thread."""
    loop = asyncio.new_event_loop()
    state = FakeState()
    server = loop.run_until_complete(asyncio.start_server(_handler(state), "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield FakeServer(port=port, state=state)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


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
    table = capsys.readouterr().out.splitlines()
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


def test_compare_baseline_runs_baseline_then_server_and_prints_ratio(
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
