"""The repetition detector over real HTTP.

The tiny llama never loops by itself under greedy decoding, so the OpenAI tests
force a loop: ``logit_bias`` +100 on " sea" makes greedy output that one token
forever. The safe detector stops it after 8 tokens, the strict one after 4, with
``finish_reason: "stop"`` and the additive ``stop_reason`` fields. A request may
choose its own mode (``repetition_policy_override``) only when it is trusted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import LiveServer, sse_events

SEA = " sea"
RUN = {"safe": 8, "strict": 4}  # the run length that stops a loop in each mode
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}
ANY_HOST = ("--host", "0.0.0.0")  # not loopback: only a key or the flag makes a request trusted
KEY = "test-key"


@pytest.fixture(scope="module")
def sea(tiny_llama_path: Path) -> int:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tiny_llama_path / "tokenizer.json")).encode(SEA).ids
    assert len(ids) == 1, ids
    return int(ids[0])


SERVERS: dict[str, tuple[str, ...]] = {
    "safe": (),  # the default mode, on loopback: its clients are trusted
    "strict": ("--repetition-policy", "strict"),
    "off": ("--repetition-policy", "off"),
    "untrusted": ANY_HOST,
}


Servers = Callable[[str], LiveServer]


@pytest.fixture(scope="module")
def servers(launch_server: LaunchServer) -> Servers:
    """The server of a SERVERS entry, started on first use."""
    return lambda name: launch_server(*SERVERS[name])


def forced(kind: str, sea: int, **fields: Any) -> dict[str, Any]:
    """A greedy request whose output is " sea" forever, unless something stops it."""
    body: dict[str, Any] = {
        "model": "default",
        "temperature": 0.0,
        "max_tokens": 24,
        "logit_bias": {str(sea): 100},
        "ignore_eos": True,
        **fields,
    }
    if kind == "chat":
        body["messages"] = [{"role": "user", "content": "Tell me a story about the sea."}]
    else:
        body["prompt"] = "Once upon a time"
    return body


def _headers(key: str | None = None, request_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return {**headers, "x-request-id": request_id} if request_id else headers


def post(server: LiveServer, kind: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    resp = httpx.post(server.base_url + PATHS[kind], json=body, headers=_headers(**kw), timeout=120)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def streamed(server: LiveServer, kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The streamed text and the choice of the chunk that carries the finish reason."""
    text, final = "", None
    url = server.base_url + PATHS[kind]
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        for chunk in sse_events(resp.iter_lines()):
            for choice in chunk["choices"]:
                text += (choice["delta"].get("content") or "") if kind == "chat" else choice["text"]
                if choice["finish_reason"] is not None:
                    assert final is None, "two final chunks"
                    final = choice
                else:
                    assert "stop_reason" not in choice and "stop_reason_detail" not in choice
    assert final is not None
    return text, final


def text_of(kind: str, choice: dict[str, Any]) -> str:
    return str(choice["message"]["content"] if kind == "chat" else choice["text"])


def repetition_status(server: LiveServer, key: str | None = None) -> dict[str, Any]:
    url = f"{server.base_url}/v1/status"
    return dict(httpx.get(url, headers=_headers(key), timeout=10).json()["repetition"])


def assert_stopped(choice: dict[str, Any], run: int) -> None:
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] == "repetition_detected"
    assert choice["stop_reason_detail"] == f"token_run_len_{run}"


# -- each mode stops the loop, on both OpenAI routes, streamed or not ------------------


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("mode", ["safe", "strict"])
def test_a_loop_is_stopped(servers: Servers, sea: int, mode: str, kind: str) -> None:
    server, run = servers(mode), RUN[mode]
    before = repetition_status(server)
    body = post(server, kind, forced(kind, sea))
    choice = body["choices"][0]
    assert_stopped(choice, run)
    assert text_of(kind, choice) == SEA * run  # the text up to the stop is kept
    assert body["usage"]["completion_tokens"] == run
    after = repetition_status(server)
    assert after["mode"] == mode
    assert after["interventions"][mode] == before["interventions"][mode] + 1


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("mode", ["safe", "strict"])
def test_a_streamed_loop_is_stopped(servers: Servers, sea: int, mode: str, kind: str) -> None:
    text, final = streamed(servers(mode), kind, forced(kind, sea))
    assert_stopped(final, RUN[mode])
    assert text == SEA * RUN[mode]


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_off_lets_the_loop_run(servers: Servers, sea: int, kind: str) -> None:
    body = post(servers("off"), kind, forced(kind, sea))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "stop_reason" not in choice and "stop_reason_detail" not in choice
    assert text_of(kind, choice) == SEA * 24
    assert repetition_status(servers("off"))["mode"] == "off"


def test_ordinary_output_carries_no_stop_reason(servers: Servers) -> None:
    body = forced("chat", 0, max_tokens=24)
    del body["logit_bias"]
    choice = post(servers("strict"), "chat", body)["choices"][0]
    assert choice["finish_reason"] == "length"  # varied text: even strict lets it run
    assert "stop_reason" not in choice and "stop_reason_detail" not in choice


@pytest.mark.parametrize("runtime", ["simple", "batched"])
def test_every_runtime_mode_stops_loops(
    launch_server: LaunchServer, sea: int, runtime: str
) -> None:
    server = launch_server("--runtime-mode", runtime)
    choices = post(server, "chat", forced("chat", sea, n=3))["choices"]
    assert len(choices) == 3
    for choice in choices:
        assert_stopped(choice, RUN["safe"])


# -- a loop the tiny model falls into by itself, on /v1/messages too ----------------------

# Greedy output for this prompt writes the token "28" five times in a row (tokens 64-68):
# strict stops it at the fourth, safe lets a run of five pass.
NATURAL = [{"role": "user", "content": "dog"}]


def messages(server: LiveServer, **fields: Any) -> httpx.Response:
    body = {"model": "default", "max_tokens": 96, "temperature": 0.0, "messages": NATURAL}
    return httpx.post(f"{server.base_url}/v1/messages", json={**body, **fields}, timeout=120)


def test_messages_end_the_turn_when_a_loop_is_stopped(servers: Servers) -> None:
    strict = messages(servers("strict")).json()
    assert (strict["stop_reason"], strict["stop_sequence"]) == ("end_turn", None)
    assert strict["stop_reason_detail"] == "token_run_len_4"
    assert strict["usage"]["output_tokens"] < 96
    text = strict["content"][0]["text"]
    assert text.endswith("28" * 4)
    safe = messages(servers("safe")).json()
    assert safe["stop_reason"] == "max_tokens" and "stop_reason_detail" not in safe
    assert safe["content"][0]["text"].startswith(text + "28")


def test_streamed_messages_end_the_turn_when_a_loop_is_stopped(servers: Servers) -> None:
    url = f"{servers('strict').base_url}/v1/messages"
    body = {"model": "default", "max_tokens": 96, "temperature": 0.0, "messages": NATURAL}
    deltas = []
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line.removeprefix("data:"))
                if event["type"] == "message_delta":
                    deltas.append(event["delta"])
    assert deltas == [
        {"stop_reason": "end_turn", "stop_sequence": None, "stop_reason_detail": "token_run_len_4"}
    ]


def test_openai_chat_stops_the_same_natural_loop(servers: Servers) -> None:
    body = {"model": "default", "temperature": 0.0, "max_tokens": 96, "messages": NATURAL}
    strict = post(servers("strict"), "chat", body)
    assert_stopped(strict["choices"][0], RUN["strict"])
    expected = messages(servers("strict")).json()
    assert strict["choices"][0]["message"]["content"] == expected["content"][0]["text"]
    assert strict["usage"]["completion_tokens"] == expected["usage"]["output_tokens"]
    assert post(servers("safe"), "chat", body)["choices"][0]["finish_reason"] == "length"


# -- request-level override: honoured only when trusted ------------------------------


def test_a_loopback_client_of_a_loopback_server_may_override(servers: Servers, sea: int) -> None:
    server = servers("safe")
    before = repetition_status(server)
    body = post(
        server, "completion", forced("completion", sea, repetition_policy_override="strict")
    )
    assert_stopped(body["choices"][0], RUN["strict"])
    after = repetition_status(server)
    assert after["overrides_accepted"] == before["overrides_accepted"] + 1
    assert after["overrides_denied"] == before["overrides_denied"]
    assert after["interventions"]["strict"] == before["interventions"]["strict"] + 1


def test_an_untrusted_override_is_ignored_logged_and_counted(servers: Servers, sea: int) -> None:
    server = servers("untrusted")
    before = repetition_status(server)
    rid = f"untrusted-{uuid.uuid4().hex[:8]}"
    body = forced("chat", sea, n=2, repetition_policy_override="strict")
    choices = post(server, "chat", body, request_id=rid)["choices"]
    for choice in choices:
        assert_stopped(choice, RUN["safe"])  # the server's mode, not the request's
    after = repetition_status(server)
    assert after["overrides_denied"] == before["overrides_denied"] + 1  # once per request
    assert after["overrides_accepted"] == before["overrides_accepted"]
    assert after["interventions"]["safe"] == before["interventions"]["safe"] + 2
    notes = [line for line in server.log_tail(200_000).splitlines() if rid in line]
    assert len([n for n in notes if "repetition_policy_override" in n]) == 1, notes
    caps = httpx.get(f"{server.base_url}/v1/capabilities", timeout=10).json()
    assert caps["policies"]["repetition"]["request_override"] == "trusted-only"


@pytest.mark.parametrize(
    ("args", "key", "capability"),
    [
        ((*ANY_HOST, "--api-key", KEY), KEY, "trusted-only"),
        ((*ANY_HOST, "--trust-requests-when-auth-disabled"), None, "allowed"),
    ],
    ids=["api_key", "trust_flag"],
)
def test_a_key_or_the_flag_makes_an_override_trusted(
    launch_server: LaunchServer, sea: int, args: tuple[str, ...], key: str | None, capability: str
) -> None:
    server = launch_server(*args)
    body = forced("chat", sea, repetition_policy_override="strict")
    assert_stopped(post(server, "chat", body, key=key)["choices"][0], RUN["strict"])
    status = repetition_status(server, key)
    assert (status["overrides_accepted"], status["overrides_denied"]) == (1, 0)
    caps = httpx.get(f"{server.base_url}/v1/capabilities", headers=_headers(key), timeout=10)
    assert caps.json()["policies"]["repetition"]["request_override"] == capability


@pytest.mark.parametrize("value", ["off", "aggressive", 1])
def test_an_unknown_override_is_a_400(servers: Servers, value: Any) -> None:
    resp = httpx.post(
        servers("safe").base_url + PATHS["chat"],
        json={**forced("chat", 0), "repetition_policy_override": value},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "repetition_policy_override"


# -- on real text, safe mode changes nothing ---------------------------------------------

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis in two sentences.",
    "List three uses for a paperclip.",
    "Translate 'good morning' into Spanish and German.",
    "What is 17 times 23?",
    "Write a Python function that reverses a string.",
    "Give me a short tip for learning to play the guitar.",
    "Describe the water cycle to a ten-year-old.",
    "What are the primary colors?",
    "Suggest a name for a friendly robot and explain why.",
    "Summarize the plot of Romeo and Juliet in one paragraph.",
    "How do I make a cup of green tea?",
    "Why is the sky blue?",
    "Write the opening line of a mystery novel.",
    "Name four planets of the solar system and one fact about each.",
]


@pytest.mark.slow
def test_safe_mode_agrees_with_off_on_real_prompts(launch_server: LaunchServer) -> None:
    safe = launch_server(model=None, startup_timeout_s=600)
    off = launch_server("--repetition-policy", "off", model=None, startup_timeout_s=600)

    def answers(server: LiveServer) -> list[str]:
        out = []
        for prompt in PROMPTS:
            body = {
                "model": "default",
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.0,
                "max_tokens": 32,  # past every safe-mode trigger (8 to 24 tokens)
            }
            out.append(text_of("chat", post(server, "chat", body)["choices"][0]))
        return out

    before = repetition_status(safe)["interventions"]
    with_safe, with_off = answers(safe), answers(off)
    assert len(set(with_off)) == len(PROMPTS) and all(with_off)  # varied, real output
    for prompt, a, b in zip(PROMPTS, with_safe, with_off, strict=True):
        assert a == b, f"{prompt!r}: safe {a!r} != off {b!r}"
    assert repetition_status(safe)["interventions"] == before
