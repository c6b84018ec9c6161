"""Continuous batching against real servers: per-request sampling, aborts, preemption, modes.

Every check compares what a request gives when it runs concurrently with what the
same request gives alone: batching must never change a request's result. The
tiny llama fixture never ends a turn by itself under greedy decoding, so
``max_tokens`` alone decides the length of a greedy answer.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import (
    REPO_ROOT,
    LiveServer,
    free_port,
    server_command,
    sse_events,
    wait_idle,
)

HTTP_TIMEOUT_S = 60.0  # per request: a hang fails the test instead of blocking the suite
BATCHED = ("--runtime-mode", "batched")
TINY_POOL = ("--cache-memory-mb", "1", "--block-size", "16")

STORY = "Tell me a story about the sea."
CAPITALS = "What is the capital of France? Answer briefly."
CODE = "Write a Python function that adds two numbers."
WEATHER = "What will the weather be like tomorrow afternoon?"


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat_body(text: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "default", "messages": messages(text), "temperature": 0.0}
    return {**body, **fields}


def post_chat(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def outcome(resp: dict[str, Any]) -> tuple[str, str, int]:
    """What must not depend on the batch: text, finish reason, completion tokens."""
    choice = resp["choices"][0]
    return choice["message"]["content"], choice["finish_reason"], resp["usage"]["completion_tokens"]


def run_together(fns: list[Callable[[], Any]]) -> list[Any]:
    """Call every function on its own thread, released at the same moment."""
    barrier = threading.Barrier(len(fns))

    def start(fn: Callable[[], Any]) -> Any:
        barrier.wait(timeout=HTTP_TIMEOUT_S)
        return fn()

    with ThreadPoolExecutor(max_workers=len(fns)) as pool:
        futures = [pool.submit(start, fn) for fn in fns]
        return [f.result(timeout=2 * HTTP_TIMEOUT_S) for f in futures]


class StatusPoller:
    """Snapshots of ``/v1/status`` taken on a background thread while a block runs."""

    def __init__(self, base_url: str, interval_s: float = 0.02) -> None:
        self._url = f"{base_url}/v1/status"
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._error: BaseException | None = None
        self.snapshots: list[dict[str, Any]] = []

    def __enter__(self) -> StatusPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._error is not None and exc[0] is None:
            raise AssertionError(f"/v1/status failed while polling: {self._error!r}")

    def _poll(self) -> None:
        try:
            with httpx.Client(timeout=10) as http:
                while not self._stop.is_set():
                    resp = http.get(self._url)
                    resp.raise_for_status()
                    self.snapshots.append(resp.json())
                    self._stop.wait(self._interval_s)
        except BaseException as exc:  # reported by __exit__ on the test's thread
            self._error = exc

    @property
    def max_running(self) -> int:
        return max((s["num_running"] for s in self.snapshots), default=0)


def engine_status(base_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """``/v1/status`` once the engine has published its pool (blocks_total > 0)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = httpx.get(f"{base_url}/v1/status", timeout=5).json()
        if status["cache"]["blocks_total"] > 0 or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def assert_pool_idle(base_url: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """No request left anywhere and every KV block back in the pool."""
    status = wait_idle(base_url, timeout_s=timeout_s)
    assert status["requests"] == [], status["requests"]
    cache = status["cache"]
    assert cache["blocks_total"] > 0, cache
    assert cache["blocks_used"] == 0, f"blocks leaked: {cache}"
    assert cache["blocks_free"] == cache["blocks_total"], cache
    return status


def finished_requests(server: LiveServer) -> dict[str, tuple[str, int, int, str, int]]:
    """Engine completion log lines by request id: reason, prompt, cached, hit type, tokens."""
    pattern = re.compile(
        r"request (\S+) (\w+): (\d+) prompt \((\d+) cached, (\w+)\) \+ (\d+) completion tokens"
    )
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    return {m[1]: (m[2], int(m[3]), int(m[4]), m[5], int(m[6])) for m in pattern.finditer(text)}


@pytest.fixture(scope="module")
def batched(launch_server: LaunchServer, tiny_llama_long_path: Path) -> LiveServer:
    """Batched server on the tiny llama with a 32k window (room for runaway streams)."""
    return launch_server(*BATCHED, model=tiny_llama_long_path)


@pytest.fixture(scope="module")
def http(batched: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=batched.base_url, timeout=HTTP_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def token_id(tiny_llama_path: Path) -> Callable[[str], int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_llama_path / "tokenizer.json"))

    def single(text: str) -> int:
        ids = tokenizer.encode(text).ids
        assert len(ids) == 1, (text, ids)
        return int(ids[0])

    return single


# ---------------------------------------------------------------------------
# (a) every request keeps its own sampling parameters inside a batch


def test_sampling_params_are_per_request(
    batched: LiveServer, http: httpx.Client, token_id: Callable[[str], int]
) -> None:
    greedy_text = outcome(post_chat(http, chat_body(STORY, max_tokens=48)))[0]
    stop_at = 12
    stop = greedy_text[stop_at : stop_at + 3]
    cut = greedy_text.find(stop)
    bodies = {
        "greedy": chat_body(STORY, max_tokens=48),
        "seeded": chat_body(STORY, max_tokens=48, temperature=1.0, seed=1234),
        "seeded_top_p": chat_body(CODE, max_tokens=48, temperature=0.8, top_p=0.9, seed=7),
        "top_k_1": chat_body(STORY, max_tokens=48, temperature=1.0, top_k=1),
        # 6 tokens: the repetition detector (safe) would stop a run of 8.
        "forced": chat_body(CAPITALS, max_tokens=6, logit_bias={str(token_id(" sea")): 100}),
        "short": chat_body(CAPITALS, max_tokens=3),
        "stop": chat_body(STORY, max_tokens=48, stop=[stop]),
        "penalized": chat_body(STORY, max_tokens=48, frequency_penalty=1.5, presence_penalty=1),
        "other_prompt": chat_body(WEATHER, max_tokens=40),
    }
    serial = {name: outcome(post_chat(http, body)) for name, body in bodies.items()}

    names = list(bodies) * 2  # two copies of each, so equal requests also meet in one batch
    with StatusPoller(batched.base_url) as poller:
        results = run_together([lambda b=bodies[n]: post_chat(http, b) for n in names])
    concurrent = [outcome(r) for r in results]

    for name, got in zip(names, concurrent, strict=True):
        assert got == serial[name], f"{name}: batched {got!r} != alone {serial[name]!r}"
    assert poller.max_running > 1, "the requests never ran together; nothing was tested"

    # Each request's parameters were applied, not another row's.
    assert serial["greedy"] == (greedy_text, "length", 48)
    assert serial["top_k_1"] == serial["greedy"]
    assert serial["seeded"][0] != greedy_text
    assert serial["seeded"][0] != serial["seeded_top_p"][0]
    assert serial["forced"] == (" sea" * 6, "length", 6)
    assert serial["short"][1:] == ("length", 3)
    assert serial["stop"][:2] == (greedy_text[:cut], "stop")
    assert serial["penalized"][0] != greedy_text
    assert serial["other_prompt"][0] != greedy_text[:40]


# ---------------------------------------------------------------------------
# (b) clients that disconnect mid-stream are dropped; everyone else finishes


def _stream_to_end(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Read a whole stream: text, finish reasons, tokens counted from logprobs, usage."""
    text, reasons, tokens, usage = "", [], 0, None
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        for event in sse_events(resp.iter_lines()):
            assert "error" not in event, event
            usage = event.get("usage") or usage
            for choice in event["choices"]:
                text += choice["delta"].get("content") or ""
                tokens += len((choice.get("logprobs") or {}).get("content") or [])
                if choice["finish_reason"] is not None:
                    reasons.append(choice["finish_reason"])
    return {"text": text, "reasons": reasons, "tokens": tokens, "usage": usage}


def _read_then_disconnect(base_url: str, body: dict[str, Any], request_id: str) -> int:
    """Read a few content chunks, then drop the connection; returns the chunks read."""
    chunks = 0
    headers = {"x-request-id": request_id}
    with (
        httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S) as own,
        own.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        for event in sse_events(resp.iter_lines()):
            chunks += any(c["delta"].get("content") for c in event["choices"])
            if chunks == 3:
                break
    return chunks


def test_disconnects_free_everything_and_others_finish(
    batched: LiveServer, http: httpx.Client
) -> None:
    prompts = [STORY, CAPITALS, CODE, WEATHER]
    max_tokens = 40
    reference = [outcome(post_chat(http, chat_body(p, max_tokens=max_tokens))) for p in prompts]
    stream = {"stream": True, "stream_options": {"include_usage": True}, "logprobs": True}
    runaway = chat_body(STORY, max_tokens=20000, stream=True)  # only a disconnect ends it
    tag = f"disc-{time.monotonic_ns()}"

    jobs: list[Callable[[], Any]] = []
    for i in range(32):
        if i % 4 == 3:
            jobs.append(lambda i=i: _read_then_disconnect(batched.base_url, runaway, f"{tag}-{i}"))
        else:
            body = chat_body(prompts[i % 4], max_tokens=max_tokens, **stream)
            jobs.append(lambda b=body: _stream_to_end(http, b))
    results = run_together(jobs)

    for i, result in enumerate(results):
        if i % 4 == 3:
            assert result == 3, f"stream {i} ended after {result} chunks"
            continue
        text, _, _ = reference[i % 4]
        assert result["reasons"] == ["length"], (i, result)
        assert result["tokens"] == max_tokens, (i, result)
        assert result["usage"]["completion_tokens"] == max_tokens, (i, result)
        assert result["text"] == text, f"stream {i} differs from the same request alone"

    assert_pool_idle(batched.base_url)  # a leaked 20000-token stream would keep it busy
    logged = finished_requests(batched)
    for i in range(3, 32, 4):
        reason, _, _, _, tokens = logged[f"{tag}-{i}-0"]
        assert reason == "abort" and tokens < 20000, (i, reason, tokens)


# ---------------------------------------------------------------------------
# (c) the status endpoint shows the batch while it runs


def test_status_shows_batched_mode_and_several_running(
    batched: LiveServer, http: httpx.Client
) -> None:
    assert engine_status(batched.base_url)["runtime"]["mode"] == "batched"
    bodies = [chat_body(p, max_tokens=200) for p in (STORY, CAPITALS, CODE, WEATHER)]
    with StatusPoller(batched.base_url) as poller:
        results = run_together([lambda b=b: post_chat(http, b) for b in bodies])
    assert [outcome(r)[1:] for r in results] == [("length", 200)] * 4
    busy = [s for s in poller.snapshots if s["num_running"] > 1]
    assert busy, f"never saw two requests running: {poller.snapshots[-3:]}"
    assert all(s["runtime"]["mode"] == "batched" for s in poller.snapshots)
    for snap in busy:
        assert len(snap["requests"]) == snap["num_running"] + snap["num_waiting"], snap
        for req in snap["requests"]:
            assert req["phase"] in ("queued", "prefill", "generation"), req
            assert req["max_tokens"] == 200 and 0 <= req["generated_tokens"] <= 200, req
            assert 0 <= req["computed_tokens"] <= req["prompt_tokens"] + req["generated_tokens"]
            if req["generated_tokens"] >= 2:  # the latest gaps between its tokens
                assert 0 < req["recent_itl_ms"] <= req["recent_itl_max_ms"], req
            else:
                assert req["recent_itl_ms"] is None, req
    streaming = [r for s in busy for r in s["requests"] if r["generated_tokens"] >= 2]
    assert streaming, "no snapshot caught a request mid-stream"
    assert max(s["runtime"]["active_concurrency"] for s in poller.snapshots) >= 2
    assert_pool_idle(batched.base_url)


# ---------------------------------------------------------------------------
# (d) a pool far smaller than the demand: preemption, recompute, same answers


def _long_prompt(i: int) -> str:
    """About 200 tokens whose first block differs per request (no shared KV)."""
    lines = [
        "Once upon a time, in a small village by the sea, there lived an old fisherman.",
        "Every morning he rowed out beyond the reef, and every evening he came home.",
        "The weather today is sunny with a light breeze; tomorrow it may rain.",
        "A server receives requests, schedules them, runs the model, and streams tokens.",
        "Music, art, science and history: four subjects that students learn at school.",
        "In 1969, astronauts landed on the Moon; in 2024, engineers built faster chips.",
        "She sells sea shells by the sea shore. Peter Piper picked a peck of peppers.",
        "The end of the story came quickly: the storm passed and the boats returned.",
    ]
    rotated = lines[i:] + lines[:i]
    return f"Story {i} of {i * 7 + 3}: " + " ".join(rotated[:7])


@pytest.fixture(scope="module")
def tiny_pool(launch_server: LaunchServer) -> LiveServer:
    return launch_server(*BATCHED, *TINY_POOL)


def test_preemption_recomputes_without_changing_answers(tiny_pool: LiveServer) -> None:
    url = tiny_pool.base_url
    max_tokens = 280
    bodies = [chat_body(_long_prompt(i), max_tokens=max_tokens) for i in range(8)]
    # Sampler state (the seeded key, penalty counts) must survive a recompute too.
    bodies[5].update(temperature=0.7, seed=5)
    bodies[6].update(frequency_penalty=0.5, presence_penalty=0.5)
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
        serial_resps = [post_chat(http, b) for b in bodies]
        status = engine_status(url)
        with StatusPoller(url, interval_s=0.05) as poller:
            concurrent = run_together([lambda b=b: post_chat(http, b) for b in bodies])

    cache = status["cache"]
    demand = sum(r["usage"]["total_tokens"] for r in serial_resps)
    capacity = cache["blocks_total"] * cache["block_size"]
    assert cache["block_size"] == 16
    assert 0 < capacity < 0.55 * demand, f"pool of {capacity} tokens is not tight for {demand}"
    preempted = tiny_pool.log_path.read_text(encoding="utf-8").count("preempted ")
    assert preempted > 0, "the tiny pool never preempted; the test proves nothing"
    assert poller.max_running > 1

    serial = [outcome(r) for r in serial_resps]
    greedy = [s for i, s in enumerate(serial) if i != 5]  # a sample may end on EOS
    assert all(s[1:] == ("length", max_tokens) for s in greedy), serial
    for i, (alone, together) in enumerate(zip(serial, map(outcome, concurrent), strict=True)):
        assert together == alone, f"request {i} changed after preemption"
    assert_pool_idle(url)


def _first_status(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> Any:
    """The first ``/v1/status`` body a starting server answers with 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with code {proc.returncode} during startup")
        try:
            resp = httpx.get(f"{base_url}/v1/status", timeout=2)
        except httpx.HTTPError:
            resp = None
        if resp is not None and resp.status_code == 200:
            return resp.json()
        time.sleep(0.01)
    raise AssertionError(f"/v1/status never answered 200 in {timeout_s:.0f}s")


def test_status_describes_pool_from_first_answer(tiny_llama_path: Path, tmp_path: Path) -> None:
    # Our own process, polled every 10 ms from its first answer (the fixture waits on /health).
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_MLX_CACHE": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            server_command(tiny_llama_path, port, BATCHED),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
        )
    try:
        status = _first_status(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert status["runtime"]["mode"] == "batched", status["runtime"]
    assert status["cache"]["blocks_total"] > 0, status["cache"]
    assert status["cache"]["block_size"] == 16, status["cache"]


# ---------------------------------------------------------------------------
# (e) runtime modes: simple, auto with a threshold, and the legacy switches


def test_simple_mode_runs_one_at_a_time(launch_server: LaunchServer) -> None:
    url = launch_server("--runtime-mode", "simple").base_url
    bodies = [chat_body(p, max_tokens=64) for p in (STORY, CAPITALS, CODE, WEATHER)]
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
        serial = [outcome(post_chat(http, b)) for b in bodies]
        with StatusPoller(url) as poller:
            results = run_together([lambda b=b: post_chat(http, b) for b in bodies])
    assert [outcome(r) for r in results] == serial
    assert poller.snapshots
    assert all(s["runtime"]["mode"] == "simple" for s in poller.snapshots)
    assert poller.max_running <= 1, [s["num_running"] for s in poller.snapshots]
    assert any(s["num_waiting"] > 0 for s in poller.snapshots), "requests were never queued"
    assert_pool_idle(url)


def _wait_mode(url: str, mode: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status = engine_status(url)
    while status["runtime"]["mode"] != mode and time.monotonic() < deadline:
        time.sleep(0.05)
        status = httpx.get(f"{url}/v1/status", timeout=5).json()
    assert status["runtime"]["mode"] == mode, status["runtime"]
    return status


def test_auto_mode_batches_only_under_load(launch_server: LaunchServer) -> None:
    url = launch_server("--runtime-mode", "auto", "--runtime-mode-threshold", "2").base_url
    _wait_mode(url, "simple")
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
        with StatusPoller(url) as alone:
            assert outcome(post_chat(http, chat_body(STORY, max_tokens=200)))[2] == 200
        bodies = [chat_body(p, max_tokens=200) for p in (STORY, CAPITALS, CODE, WEATHER)]
        with StatusPoller(url) as loaded:
            run_together([lambda b=b: post_chat(http, b) for b in bodies])
    assert any(s["num_running"] == 1 for s in alone.snapshots), "missed the lone request"
    assert all(s["runtime"]["mode"] == "simple" for s in alone.snapshots)
    assert any(
        s["runtime"]["mode"] == "batched" and s["num_running"] > 1 for s in loaded.snapshots
    ), "auto mode never batched four requests"
    wait_idle(url)
    _wait_mode(url, "simple")  # back to simple once idle


def test_legacy_switches_give_batched_paged_server(launch_server: LaunchServer) -> None:
    url = launch_server("--continuous-batching", "--use-paged-cache").base_url
    status = engine_status(url)
    assert status["runtime"]["mode"] == "batched"
    assert status["cache"]["type"] == "paged_cache"
    bodies = [chat_body(p, max_tokens=100) for p in (STORY, CAPITALS, CODE)]
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http, StatusPoller(url) as poller:
        results = run_together([lambda b=b: post_chat(http, b) for b in bodies])
    assert [outcome(r)[1:] for r in results] == [("length", 100)] * 3
    assert poller.max_running > 1
    assert_pool_idle(url)
