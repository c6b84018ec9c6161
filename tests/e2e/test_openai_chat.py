"""/v1/chat/completions and the service endpoints, through the official OpenAI SDK.

The tiny llama fixture never ends a turn by itself under greedy decoding (its
special-token logits are muted), so every request sets ``max_tokens`` and a
plain request finishes with ``"length"``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error, openai_client, sse_events, wait_idle

MESSAGES = [{"role": "user", "content": "Tell me a story about the sea."}]
WINDOW = 2048  # max_position_embeddings of the tiny model


@pytest.fixture(scope="module")
def client(tiny_server: str) -> Iterator[Any]:
    with openai_client(tiny_server) as sdk:
        yield sdk


def chat(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "default")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 16)
    return client.chat.completions.create(**kwargs)


def stream_text(client: Any, **kwargs: Any) -> tuple[dict[int, str], list[Any]]:
    """Concatenated content per choice index, and all chunks."""
    chunks = list(chat(client, stream=True, **kwargs))
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    return texts, chunks


def finish_reasons(chunks: list[Any]) -> dict[int, str]:
    reasons: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                assert choice.index not in reasons, "finish_reason sent twice"
                reasons[choice.index] = choice.finish_reason
    return reasons


# ---------------------------------------------------------------------------
# Chat completions


def test_non_stream_returns_text_usage_and_finish_reason(client: Any) -> None:
    resp = chat(client, max_tokens=12)
    assert resp.object == "chat.completion"
    assert resp.id and isinstance(resp.created, int) and resp.model
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason == "length"
    assert resp.usage.completion_tokens == 12
    assert resp.usage.prompt_tokens > 5
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_greedy_is_deterministic(client: Any) -> None:
    first = chat(client, max_tokens=20).choices[0].message.content
    assert chat(client, max_tokens=20).choices[0].message.content == first


def test_prompt_changes_output(client: Any) -> None:
    a = chat(client, messages=[{"role": "user", "content": "Hello there"}])
    b = chat(client, messages=[{"role": "user", "content": "What is two plus two?"}])
    assert a.choices[0].message.content != b.choices[0].message.content
    assert a.usage.prompt_tokens != b.usage.prompt_tokens


def test_system_and_multi_turn_messages(client: Any) -> None:
    messages = [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "And now?"}]},
    ]
    short = chat(client, messages=messages[-1:])
    resp = chat(client, messages=messages)
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > short.usage.prompt_tokens


def test_stream_matches_non_stream(client: Any) -> None:
    expected = chat(client, max_tokens=24).choices[0].message.content
    texts, chunks = stream_text(client, max_tokens=24)
    assert texts == {0: expected}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finish_reasons(chunks) == {0: "length"}
    # The finish_reason comes last for the choice: no content after it.
    last = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason)
    assert all(not (c.choices and c.choices[0].delta.content) for c in chunks[last + 1 :])


def test_stream_wire_format(tiny_http: httpx.Client) -> None:
    body = {"model": "default", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with tiny_http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        data_lines = [line for line in resp.iter_lines() if line.startswith("data:")]
    assert data_lines[-1].strip() == "data: [DONE]"
    for line in data_lines[:-1]:
        json.loads(line.removeprefix("data:"))


def test_n_two_choices(client: Any) -> None:
    resp = chat(client, n=2, max_tokens=10)
    assert sorted(c.index for c in resp.choices) == [0, 1]
    single = chat(client, max_tokens=10).choices[0].message.content
    # Greedy: both choices are the single greedy answer.
    assert [c.message.content for c in resp.choices] == [single, single]
    assert all(c.finish_reason == "length" for c in resp.choices)
    assert resp.usage.completion_tokens == 20


def test_n_two_stream(client: Any) -> None:
    single = chat(client, max_tokens=10).choices[0].message.content
    texts, chunks = stream_text(client, n=2, max_tokens=10)
    assert texts == {0: single, 1: single}
    assert finish_reasons(chunks) == {0: "length", 1: "length"}


def test_n_two_sampled_choices_differ(client: Any) -> None:
    resp = chat(client, n=2, temperature=1.0, seed=7, max_tokens=24)
    texts = [c.message.content for c in resp.choices]
    assert texts[0] != texts[1], "n=2 samples must not share one sampler state"


def _check_token_logprobs(entries: list[Any], top_n: int) -> None:
    for entry in entries:
        assert isinstance(entry.token, str)
        assert entry.logprob <= 1e-5
        assert len(entry.top_logprobs) == top_n
        tops = [alt.logprob for alt in entry.top_logprobs]
        assert all(lp <= 1e-5 for lp in tops)
        assert tops == sorted(tops, reverse=True)
        assert sum(math.exp(lp) for lp in tops) <= 1.0 + 1e-4
        if entry.bytes is not None:
            assert bytes(entry.bytes).decode("utf-8") == entry.token
        # Greedy picks the most likely token.
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == pytest.approx(tops[0], abs=1e-4)


def test_logprobs_shape(client: Any) -> None:
    resp = chat(client, max_tokens=8, logprobs=True, top_logprobs=3)
    choice = resp.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == 8 == resp.usage.completion_tokens
    _check_token_logprobs(entries, 3)
    assert "".join(e.token for e in entries) == choice.message.content


def test_logprobs_stream(client: Any) -> None:
    _, chunks = stream_text(client, max_tokens=6, logprobs=True, top_logprobs=2)
    entries = [
        entry
        for chunk in chunks
        for choice in chunk.choices
        if choice.logprobs is not None
        for entry in choice.logprobs.content or []
    ]
    assert len(entries) == 6
    _check_token_logprobs(entries, 2)


def test_no_logprobs_unless_asked(client: Any) -> None:
    assert chat(client, max_tokens=4).choices[0].logprobs is None


def _stop_case(client: Any) -> tuple[str, str, str]:
    """Greedy text, a stop string taken from its middle, and the expected cut text."""
    full = chat(client, max_tokens=40).choices[0].message.content
    assert len(full) > 10, full
    mid = len(full) // 2
    stop = full[mid : mid + 3]
    cut = full[: full.find(stop)]
    return full, stop, cut


def test_stop_string_cuts_output(client: Any) -> None:
    _, stop, cut = _stop_case(client)
    resp = chat(client, max_tokens=40, stop=stop)
    assert resp.choices[0].message.content == cut
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens < 40


def test_stop_list_and_stream(client: Any) -> None:
    _, stop, cut = _stop_case(client)
    stops = ["\u2603never-appears\u2603", stop]
    assert chat(client, max_tokens=40, stop=stops).choices[0].message.content == cut
    texts, chunks = stream_text(client, max_tokens=40, stop=stops)
    assert texts == {0: cut}, "streamed text must not leak any part of the stop string"
    assert finish_reasons(chunks) == {0: "stop"}


def test_max_tokens_gives_length(client: Any) -> None:
    resp = chat(client, max_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3


def test_max_completion_tokens(client: Any) -> None:
    resp = client.chat.completions.create(
        model="default", messages=MESSAGES, temperature=0.0, max_completion_tokens=5
    )
    assert resp.usage.completion_tokens == 5
    assert resp.choices[0].finish_reason == "length"


def test_default_max_tokens_is_clamped_to_window(client: Any) -> None:
    resp = client.chat.completions.create(model="default", messages=MESSAGES, temperature=0.0)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.total_tokens == WINDOW


def test_stream_usage_only_when_asked(client: Any) -> None:
    _, chunks = stream_text(client, max_tokens=5, stream_options={"include_usage": True})
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + 5
    assert all(c.usage is None for c in body)

    _, plain = stream_text(client, max_tokens=5)
    assert all(c.usage is None for c in plain)


def test_seed_makes_sampling_reproducible(client: Any) -> None:
    def sample(seed: int) -> str:
        resp = chat(client, temperature=1.0, seed=seed, max_tokens=16)
        return resp.choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first
    others = {sample(s) for s in (1, 2, 3)}
    assert len(others | {first}) > 1, "different seeds all gave the same sample"


@pytest.fixture(scope="module")
def isolated_server(launch_server: LaunchServer) -> str:
    """A server of its own for requests that might break the engine (others keep theirs)."""
    return launch_server("--timeout", "30").base_url


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64 + 5])
def test_any_seed_is_answered_and_engine_survives(isolated_server: str, seed: int) -> None:
    body = {"model": "default", "messages": MESSAGES, "max_tokens": 3, "temperature": 1.0}
    with httpx.Client(base_url=isolated_server, timeout=15) as http:
        resp = http.post("/v1/chat/completions", json={**body, "seed": seed})
        if resp.status_code != 200:
            error = assert_openai_error(resp, 400)
            assert "seed" in (error["param"] or error["message"])
        again = http.post("/v1/chat/completions", json={**body, "seed": 1})
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["completion_tokens"] == 3


def test_concurrent_requests_match_serial(client: Any) -> None:
    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(4)]

    def run(prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        return chat(client, messages=messages, max_tokens=24).choices[0].message.content

    serial = [run(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, prompts))
    assert concurrent == serial


def test_unknown_model_is_accepted_without_strict_mode(client: Any) -> None:
    resp = chat(client, model="gpt-4o-mini", max_tokens=2)
    assert resp.usage.completion_tokens == 2


# ---------------------------------------------------------------------------
# Sampling parameters are honoured, not dropped


@pytest.fixture(scope="module")
def token_id(tiny_llama_path: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_llama_path / "tokenizer.json"))

    def single(text: str) -> int:
        ids = tokenizer.encode(text).ids
        assert len(ids) == 1, (text, ids)
        return ids[0]

    return single


def test_logit_bias_forces_a_token(client: Any, token_id: Any) -> None:
    sea = token_id(" sea")
    resp = chat(client, max_tokens=5, logit_bias={str(sea): 100})
    assert resp.choices[0].message.content == " sea" * 5


def test_logit_bias_bans_the_greedy_token(client: Any, token_id: Any) -> None:
    greedy = chat(client, max_tokens=1, logprobs=True).choices[0].logprobs.content[0].token
    banned = chat(client, max_tokens=1, logit_bias={str(token_id(greedy)): -100})
    assert banned.choices[0].message.content != greedy


@pytest.mark.parametrize(
    "narrow",
    [{"extra_body": {"top_k": 1}}, {"top_p": 1e-6}, {"extra_body": {"min_p": 1.0}}],
    ids=["top_k_1", "top_p_tiny", "min_p_1"],
)
def test_narrow_sampling_is_greedy(client: Any, narrow: dict[str, Any]) -> None:
    greedy = chat(client, max_tokens=12).choices[0].message.content
    sampled = chat(client, max_tokens=12, temperature=1.0, seed=5, **narrow)
    assert sampled.choices[0].message.content == greedy


def test_penalties_change_greedy_output(client: Any) -> None:
    plain = chat(client, max_tokens=48).choices[0].message.content
    for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        assert chat(client, max_tokens=48, **penalty).choices[0].message.content != plain
    repetition = chat(client, max_tokens=48, extra_body={"repetition_penalty": 2.0})
    assert repetition.choices[0].message.content != plain


def test_user_field_is_accepted(client: Any) -> None:
    assert chat(client, max_tokens=2, user="user-123").usage.completion_tokens == 2


@pytest.mark.parametrize("level", ["basic", "deep"])
def test_request_diagnostics(tiny_http: httpx.Client, level: str) -> None:
    body = {
        "model": "default",
        "messages": MESSAGES,
        "max_tokens": 2,
        "include_diagnostics": True,
        "diagnostics_level": level,
    }
    data = tiny_http.post("/v1/chat/completions", json=body).json()
    assert isinstance(data.get("diagnostics"), dict), data
    # Any diagnostics_level asks for the object, include_diagnostics or not.
    level_only = {**body, "include_diagnostics": False}
    assert tiny_http.post("/v1/chat/completions", json=level_only).json()["diagnostics"]
    plain = {k: v for k, v in body.items() if "diagnostics" not in k}
    assert "diagnostics" not in tiny_http.post("/v1/chat/completions", json=plain).json()
    caps = tiny_http.get("/v1/capabilities").json()
    assert caps["features"]["request_diagnostics"] is True


# ---------------------------------------------------------------------------
# Context window


def test_prompt_longer_than_window_is_400(tiny_http: httpx.Client) -> None:
    long_text = "the sea and the storm " * 1200
    body = {"model": "default", "messages": [{"role": "user", "content": long_text}]}
    resp = tiny_http.post("/v1/chat/completions", json=body)
    error = assert_openai_error(resp, 400)
    assert str(WINDOW) in error["message"]


def test_max_tokens_beyond_window_is_400(tiny_http: httpx.Client) -> None:
    body = {"model": "default", "messages": MESSAGES, "max_tokens": WINDOW + 100}
    resp = tiny_http.post("/v1/chat/completions", json=body)
    error = assert_openai_error(resp, 400)
    assert str(WINDOW) in error["message"]


def test_context_overflow_via_sdk_raises_bad_request(client: Any) -> None:
    with pytest.raises(openai.BadRequestError):
        chat(client, max_tokens=WINDOW * 4)


# ---------------------------------------------------------------------------
# Service endpoints


def test_health(tiny_http: httpx.Client) -> None:
    resp = tiny_http.get("/health")
    assert resp.status_code == 200
    assert isinstance(resp.json(), dict)


def test_models_lists_loaded_model_and_default_alias(client: Any, tiny_llama_path: Path) -> None:
    models = client.models.list().data
    assert models, "no models listed"
    assert all(m.object == "model" for m in models)
    model_id = models[0].id
    assert model_id
    for name in (model_id, "default"):
        assert chat(client, model=name, max_tokens=2).usage.completion_tokens == 2


def test_status_counts_requests(tiny_http: httpx.Client, client: Any) -> None:
    before = tiny_http.get("/v1/status").json()
    chat(client, max_tokens=7)
    after = tiny_http.get("/v1/status").json()
    assert after["status"] == "running"
    assert after["model"]
    assert after["num_running"] == 0 and after["num_waiting"] == 0
    assert after["total_requests_processed"] >= before["total_requests_processed"] + 1
    assert after["total_completion_tokens"] >= before["total_completion_tokens"] + 7
    assert after["uptime_s"] >= before["uptime_s"]
    for key in ("active_memory_gb", "peak_memory_gb", "cache_memory_gb"):
        assert after["metal"][key] >= 0
    assert "device" in after
    assert isinstance(after["requests"], list)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _check_capabilities(
    caps: dict[str, Any], strict: bool, timeout_s: float, window: int = WINDOW
) -> None:
    assert isinstance(caps["features"]["request_diagnostics"], bool)
    assert caps["features"]["strict_model_id"] is strict
    assert caps["diagnostics"]["levels"] == ["basic", "deep"]
    assert caps["diagnostics"]["default_level"] == "basic"
    context = {k: v for k, v in caps["limits"].items() if k.endswith("context_tokens")}
    assert context, caps["limits"]
    assert window in context.values(), context
    repetition = caps["policies"]["repetition"]
    assert repetition["default_mode"] == "safe"
    assert set(repetition["supported_modes"]) == {"safe", "strict"}
    assert "request_override" in repetition
    modalities = caps["modalities"]
    assert ("text" in modalities) if isinstance(modalities, list) else modalities["text"]
    flat = _flatten(caps)
    assert any("auth" in path for path in flat), "no auth status in capabilities"
    assert any("rate_limit" in path for path in flat), "no rate-limit status in capabilities"
    timeouts = [v for path, v in flat.items() if "timeout" in path]
    assert timeout_s in timeouts, f"default timeout {timeout_s} not reported: {flat}"


def test_capabilities(tiny_http: httpx.Client) -> None:
    resp = tiny_http.get("/v1/capabilities")
    assert resp.status_code == 200
    _check_capabilities(resp.json(), strict=False, timeout_s=300)


def test_capabilities_client(tiny_server: str, tiny_http: httpx.Client) -> None:
    from vllm_mlx.capabilities_client import fetch_capabilities, summarize_capabilities

    caps = fetch_capabilities(tiny_server, api_key="not-needed")
    assert caps == tiny_http.get("/v1/capabilities").json()
    summary = summarize_capabilities(caps)
    assert summary["supports_multimodal"] is False
    assert summary["default_timeout_seconds"] == 300


REQUEST_ID_CALLS = [
    ("GET", "/health", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/capabilities", None),
    ("GET", "/v1/status", None),
    ("GET", "/v1/no-such-endpoint", None),
    ("POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2, "stream": True}),
    ("POST", "/v1/chat/completions", {"messages": [], "max_tokens": 2}),
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUEST_ID_CALLS)
def test_every_response_has_request_id(
    tiny_http: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    fresh = tiny_http.request(method, path, json=body)
    generated = fresh.headers.get("x-request-id")
    assert generated, f"{method} {path} ({fresh.status_code}) has no x-request-id"
    again = tiny_http.request(method, path, json=body).headers.get("x-request-id")
    assert again and again != generated, "request ids must be unique per request"
    mine = tiny_http.request(method, path, json=body, headers={"x-request-id": "test-rid-42"})
    assert mine.headers.get("x-request-id") == "test-rid-42"


def test_sdk_response_carries_request_id(client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="default",
        messages=MESSAGES,
        max_tokens=2,
        extra_headers={"x-request-id": "sdk-rid-7"},
    )
    assert raw.headers["x-request-id"] == "sdk-rid-7"
    assert raw.parse().usage.completion_tokens == 2


def test_logs_name_the_request_id(launch_server: LaunchServer, client: Any) -> None:
    server = launch_server()  # the same process as tiny_server
    chat(client, max_tokens=2, extra_headers={"x-request-id": "log-rid-5150"})
    deadline = time.monotonic() + 5
    while "log-rid-5150" not in server.log_tail(1_000_000) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "log-rid-5150" in server.log_tail(1_000_000)


# ---------------------------------------------------------------------------
# Servers with other options


@pytest.fixture(scope="module")
def strict_server(launch_server: LaunchServer) -> str:
    """A server with --strict-model-id and a default of 16 new tokens."""
    return launch_server("--strict-model-id", "--max-tokens", "16").base_url


def test_strict_model_id(strict_server: str) -> None:
    url = strict_server
    with openai_client(url) as client:
        model_id = client.models.list().data[0].id
        for name in ("default", model_id):
            assert chat(client, model=name, max_tokens=2).usage.completion_tokens == 2
        with pytest.raises(openai.NotFoundError):
            chat(client, model="no-such-model", max_tokens=2)

    for path, body in (
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2}),
        ("/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
    ):
        resp = httpx.post(f"{url}{path}", json={"model": "no-such-model", **body}, timeout=60)
        error = assert_openai_error(resp, 404)
        assert error["code"] == "model_not_found"
        assert "no-such-model" in error["message"]

    caps = httpx.get(f"{url}/v1/capabilities", timeout=10).json()
    _check_capabilities(caps, strict=True, timeout_s=300)


def test_server_max_tokens_is_the_default(strict_server: str) -> None:
    with openai_client(strict_server) as client:
        resp = client.chat.completions.create(model="default", messages=MESSAGES)
        assert resp.usage.completion_tokens == 16
        assert resp.choices[0].finish_reason == "length"
        # An explicit max_tokens still wins over the server default.
        assert chat(client, max_tokens=20).usage.completion_tokens == 20


@pytest.mark.slow
def test_disconnect_mid_stream_aborts_generation(
    launch_server: LaunchServer, tiny_llama_long_path: Path
) -> None:
    url = launch_server(model=tiny_llama_long_path).base_url
    body = {
        "model": "default",
        "messages": MESSAGES,
        "max_tokens": 20000,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        events = sse_events(resp.iter_lines())
        for _ in range(3):
            next(events)
    # The server must notice and drop the request, not keep generating 20k tokens.
    wait_idle(url, timeout_s=10)
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    with openai_client(url) as client:
        assert chat(client, max_tokens=4).usage.completion_tokens == 4


@pytest.mark.slow
def test_timeout_gives_408(launch_server: LaunchServer, tiny_llama_long_path: Path) -> None:
    url = launch_server("--timeout", "1", model=tiny_llama_long_path).base_url
    body = {"model": "default", "messages": MESSAGES, "max_tokens": 20000, "temperature": 0}
    start = time.monotonic()
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    elapsed = time.monotonic() - start
    assert_openai_error(resp, 408)
    assert elapsed < 10, f"timeout of 1 s answered after {elapsed:.1f} s"
    wait_idle(url, timeout_s=10)  # the timed-out generation was aborted

    with openai_client(url) as client:
        with pytest.raises(openai.APIStatusError) as excinfo:
            chat(client, max_tokens=20000)  # greedy: no EOS, so it runs to the timeout
        assert excinfo.value.status_code == 408
        assert chat(client, max_tokens=4).usage.completion_tokens == 4
    summary = httpx.get(f"{url}/v1/capabilities", timeout=10).json()
    _check_capabilities(summary, strict=False, timeout_s=1, window=32768)


@pytest.mark.slow
def test_timeout_ends_stream(launch_server: LaunchServer, tiny_llama_long_path: Path) -> None:
    url = launch_server("--timeout", "1", model=tiny_llama_long_path).base_url
    body = {
        "model": "default",
        "messages": MESSAGES,
        "max_tokens": 20000,
        "temperature": 0,
        "stream": True,
    }
    start = time.monotonic()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        events = list(sse_events(resp.iter_lines()))
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"stream outlived the 1 s timeout by far ({elapsed:.1f} s)"
    assert any(e.get("choices") for e in events), "no tokens streamed before the timeout"
    # Headers are long gone, so the stream itself must say why it ended.
    errors = [e["error"] for e in events if "error" in e]
    assert len(errors) == 1, events[-3:]
    assert errors[0]["message"] and errors[0]["type"]
    assert "error" in events[-1]
    wait_idle(url, timeout_s=10)


@pytest.mark.slow
def test_tiny_qwen2_serves(launch_server: LaunchServer, tiny_qwen2_path: Path) -> None:
    url = launch_server(model=tiny_qwen2_path).base_url
    with openai_client(url) as qwen:
        expected = chat(qwen, max_tokens=16).choices[0].message.content
        assert expected
        texts, chunks = stream_text(qwen, max_tokens=16)
    assert texts == {0: expected}
    assert finish_reasons(chunks) == {0: "length"}
