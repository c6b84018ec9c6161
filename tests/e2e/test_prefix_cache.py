"""The paged prefix cache against real servers: reuse, hit types and strategies.

Every prompt starts with a fresh nonce (or a tail that no other prompt shares),
so the cases do not feed each other's cache. The engine logs one line per
finished request, ``request <id> <reason>: N prompt (M cached, <hit type>) ...``;
the id is the ``x-request-id`` we send plus ``-<choice index>``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import LiveServer, sse_events, wait_idle

HTTP_TIMEOUT_S = 60.0
MEMORY_AWARE = ("--cache-strategy", "memory-aware")

STORY = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman and"
    " his wife. Every morning he rowed out beyond the reef, and every evening he came"
    " home with a story."
)
SCIENCE = (
    "Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees."
    " In 1969, astronauts landed on the Moon."
)
_LOG_LINE = re.compile(
    r"request (\S+) (\w+): (\d+) prompt \((\d+) cached, (\w+)\) \+ (\d+) completion tokens"
)


@dataclass(frozen=True)
class Logged:
    """One engine completion log line."""

    reason: str
    prompt_tokens: int
    cached_tokens: int
    hit_type: str
    completion_tokens: int


def nonce() -> str:
    return uuid.uuid4().hex[:8]


def logged(server: LiveServer, request_id: str, timeout_s: float = 10.0) -> Logged:
    """The engine's log line for ``request_id`` (choice 0); it may trail the response."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = server.log_path.read_text(encoding="utf-8", errors="replace")
        for m in _LOG_LINE.finditer(text):
            if m[1] == f"{request_id}-0":
                return Logged(m[2], int(m[3]), int(m[4]), m[5], int(m[6]))
        if time.monotonic() > deadline:
            raise AssertionError(f"no completion log line for {request_id}:\n{text[-2000:]}")
        time.sleep(0.05)


def post(http: httpx.Client, path: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
    resp = http.post(path, json=body, headers={"x-request-id": request_id})
    assert resp.status_code == 200, resp.text
    return resp.json()


def chat(
    http: httpx.Client,
    msgs: list[dict[str, str]],
    max_tokens: int = 16,
    request_id: str | None = None,
) -> dict[str, Any]:
    body = {"model": "default", "messages": msgs, "temperature": 0.0, "max_tokens": max_tokens}
    return post(http, "/v1/chat/completions", body, request_id or f"chat-{nonce()}")


def complete(
    http: httpx.Client, prompt: str, max_tokens: int = 4, request_id: str | None = None
) -> dict[str, Any]:
    body = {"model": "default", "prompt": prompt, "temperature": 0.0, "max_tokens": max_tokens}
    return post(http, "/v1/completions", body, request_id or f"cmpl-{nonce()}")


def cached(resp: dict[str, Any]) -> int:
    return int(resp["usage"]["prompt_tokens_details"]["cached_tokens"])


def reply(resp: dict[str, Any]) -> str:
    return str(resp["choices"][0]["message"]["content"])


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def engine_status(base_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """``/v1/status`` once the engine has published its pool (blocks_total > 0)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = httpx.get(f"{base_url}/v1/status", timeout=5).json()
        if status["cache"]["blocks_total"] > 0 or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(launch_server: LaunchServer, tiny_llama_long_path: Path) -> LiveServer:
    """Memory-aware cache on the tiny llama with a 32k window (long requests fit)."""
    return launch_server(*MEMORY_AWARE, model=tiny_llama_long_path)


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def block_size(server: LiveServer) -> int:
    return int(engine_status(server.base_url)["cache"]["block_size"])


# ---------------------------------------------------------------------------
# Reuse


def test_same_prompt_twice_is_served_from_cache(
    server: LiveServer, http: httpx.Client, block_size: int
) -> None:
    msgs = user(f"{nonce()} {STORY}")
    first = chat(http, msgs, max_tokens=24)
    second_id = f"again-{nonce()}"
    second = chat(http, msgs, max_tokens=24, request_id=second_id)
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert prompt_tokens > 3 * block_size
    assert cached(first) < block_size, "a fresh prompt cannot be cached beyond the template"
    assert prompt_tokens - block_size <= cached(second) < prompt_tokens, second["usage"]
    assert reply(second) == reply(first)
    assert logged(server, second_id).hit_type == "exact"


def test_multi_turn_reuses_previous_turn_and_reply(
    server: LiveServer, http: httpx.Client, block_size: int
) -> None:
    # A fixed conversation: the reply must survive a text round trip token for token
    # (BPE may merge a reply's leading whitespace with the template's "\n" otherwise).
    turn1 = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me a story about the sea and the old fisherman."},
    ]
    first = chat(http, turn1, max_tokens=40)
    turn2 = [
        *turn1,
        {"role": "assistant", "content": reply(first)},
        {"role": "user", "content": "And then what happened?"},
    ]
    second_id = f"turn2-{nonce()}"
    second = chat(http, turn2, max_tokens=8, request_id=second_id)
    p1, c1 = first["usage"]["prompt_tokens"], first["usage"]["completion_tokens"]
    assert c1 == 40
    # Turn 1's prompt and (nearly) all of its generated reply come back from the cache.
    assert cached(second) >= p1 + 3 * c1 // 4 - block_size, (first["usage"], second["usage"])
    assert cached(second) < second["usage"]["prompt_tokens"]
    line = logged(server, second_id)
    assert line.hit_type == "prefix" and line.cached_tokens == cached(second), line


# ---------------------------------------------------------------------------
# Hit types, read from the engine's log


def _long(tag: str) -> str:
    return f"{tag} {nonce()}: {STORY} {SCIENCE}"


def _seed_then_probe(http: httpx.Client, case: str) -> tuple[int, str, dict[str, Any]]:
    """Fill the cache for ``case``; returns the seed's prompt tokens, probe id and reply."""
    base = _long(case)
    words = base.split(" ")
    max_tokens = {"exact": 24, "prefix": 1}.get(case, 4)
    # exact: 24 tokens fill the block where the prompt ends; prefix: 1 caches the prompt only.
    seeded = complete(http, base, max_tokens=max_tokens)["usage"]["prompt_tokens"]
    if case == "exact":
        probe = base
    elif case == "supersequence":
        probe = " ".join(words[: len(words) // 2])  # ends inside the cached prompt
    elif case == "prefix":
        probe = f"{base} The storm passed and everyone slept."
    elif case == "lcp":
        probe = " ".join(words[: len(words) // 2]) + " but then a storm came from the north."
    else:
        probe = f"~{base}"  # no cached block starts with "~"
    request_id = f"{case}-{nonce()}"
    return seeded, request_id, complete(http, probe, max_tokens=4, request_id=request_id)


@pytest.mark.parametrize("case", ["exact", "supersequence", "prefix", "lcp", "miss"])
def test_hit_type_in_log(
    server: LiveServer, http: httpx.Client, block_size: int, case: str
) -> None:
    seeded, request_id, resp = _seed_then_probe(http, case)
    line = logged(server, request_id)
    prompt_tokens = resp["usage"]["prompt_tokens"]
    assert line.hit_type == case, line
    assert line.cached_tokens == cached(resp) and line.prompt_tokens == prompt_tokens
    if case in ("exact", "supersequence"):
        assert cached(resp) == prompt_tokens - 1  # all but the token that yields logits
    elif case == "prefix":
        assert cached(resp) == seeded // block_size * block_size  # its full blocks
    elif case == "lcp":
        assert 2 * block_size <= cached(resp) < prompt_tokens
    else:
        assert cached(resp) == 0


def test_status_shows_hit_while_request_runs(server: LiveServer, http: httpx.Client) -> None:
    prompt = _long("status")
    complete(http, prompt, max_tokens=24)
    request_id = f"running-{nonce()}"
    body = {"model": "default", "prompt": prompt, "max_tokens": 20000, "stream": True}
    body["temperature"] = 0.0  # greedy never picks EOS on this fixture: it keeps running
    headers = {"x-request-id": request_id}
    with http.stream("POST", "/v1/completions", json=body, headers=headers) as resp:
        assert resp.status_code == 200
        events = sse_events(resp.iter_lines())
        next(events)  # the request is generating now; its 20000 tokens keep it running
        status = http.get("/v1/status").json()
    mine = [r for r in status["requests"] if r["request_id"] == f"{request_id}-0"]
    assert len(mine) == 1, status["requests"]
    assert mine[0]["cache_hit_type"] == "exact"
    assert mine[0]["phase"] == "generation"
    assert mine[0]["cached_tokens"] > 0
    wait_idle(server.base_url)  # the disconnect aborted it
    line = logged(server, request_id)
    assert line.reason == "abort" and line.hit_type == "exact", line
    assert line.cached_tokens == mine[0]["cached_tokens"] == line.prompt_tokens - 1


def test_hit_rate_and_entries_rise(server: LiveServer, http: httpx.Client) -> None:
    msgs = user(f"{nonce()} {SCIENCE}")
    chat(http, msgs)
    chat(http, msgs)
    status = engine_status(server.base_url)
    cache = status["cache"]
    assert cache["type"] == "memory-aware_cache"
    assert 0 < cache["hit_rate"] <= 1, cache
    assert cache["entries"] > 0 and cache["blocks_cached"] > 0, cache
    assert cache["blocks_used"] == 0 and cache["blocks_free"] == cache["blocks_total"], cache


# ---------------------------------------------------------------------------
# Strategies: all reuse the previous request; legacy keeps only that one


@pytest.mark.parametrize("strategy", ["memory-aware", "paged", "legacy"])
def test_cache_strategy(
    launch_server: LaunchServer, tiny_llama_long_path: Path, strategy: str
) -> None:
    url = launch_server("--cache-strategy", strategy, model=tiny_llama_long_path).base_url
    status = engine_status(url)
    bs = status["cache"]["block_size"]
    assert status["cache"]["type"] == f"{strategy}_cache"
    first, other = user(f"{nonce()} {STORY}"), user(f"{nonce()} {SCIENCE}")
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
        a1 = chat(http, first, max_tokens=24)
        a2 = chat(http, first, max_tokens=24)  # the immediately previous request
        chat(http, other, max_tokens=24)
        a3 = chat(http, first, max_tokens=24)  # two requests back
    prompt_tokens = a1["usage"]["prompt_tokens"]
    assert reply(a1) == reply(a2) == reply(a3)
    assert cached(a2) >= prompt_tokens - bs, a2["usage"]
    if strategy == "legacy":
        assert cached(a3) < bs, f"legacy kept more than the last request: {a3['usage']}"
    else:
        assert cached(a3) >= prompt_tokens - bs, a3["usage"]
    assert engine_status(url)["cache"]["hit_rate"] > 0
