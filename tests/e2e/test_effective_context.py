"""``--effective-context-tokens``: a context contract that is reported and enforced.

The tiny llama's window is 2048 tokens; the server caps it at 128. Every route
reports 128, and prompt plus max_tokens beyond it is a 400 that names the limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error

LIMIT = 128
LONG = "hello world " * 150  # about 300 tokens: over the cap, well inside the model's window
NAMES_LIMIT = f"maximum context length is {LIMIT} tokens"


@pytest.fixture(scope="module")
def http(launch_server: LaunchServer) -> Iterator[httpx.Client]:
    url = launch_server("--effective-context-tokens", str(LIMIT)).base_url
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": content}], **fields}


def test_the_contract_is_reported(http: httpx.Client) -> None:
    caps = http.get("/v1/capabilities").json()
    limits = caps["limits"]
    assert (limits["max_context_tokens"], limits["effective_context_tokens"]) == (2048, LIMIT)
    cards = http.get("/v1/models").json()["data"]
    # The embedding model is listed with its own window, which the cap does not touch.
    embedding = caps["features"]["embedding_model"]
    assert {m["max_model_len"] for m in cards if m["id"] != embedding} == {LIMIT}
    body = http.post("/v1/chat/completions", json=chat("Hi", include_diagnostics=True)).json()
    diagnostics = body["diagnostics"]
    assert (diagnostics["max_context_tokens"], diagnostics["effective_context_tokens"]) == (
        2048,
        LIMIT,
    )
    assert diagnostics["effective_context_source"] == "operator_override"
    # The default budget is fitted into the cap, not the model's window.
    assert body["usage"]["total_tokens"] <= LIMIT


@pytest.mark.parametrize("stream", [False, True])
def test_chat_max_tokens_beyond_the_cap(http: httpx.Client, stream: bool) -> None:
    resp = http.post("/v1/chat/completions", json=chat("Hi", max_tokens=LIMIT, stream=stream))
    error = assert_openai_error(resp, 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "max_tokens")
    assert NAMES_LIMIT in error["message"]
    fits = http.post("/v1/chat/completions", json=chat("Hi", max_tokens=8))
    assert fits.status_code == 200, fits.text


def test_chat_prompt_beyond_the_cap(http: httpx.Client) -> None:
    error = assert_openai_error(http.post("/v1/chat/completions", json=chat(LONG)), 400)
    assert error["code"] == "context_length_exceeded"
    assert NAMES_LIMIT in error["message"] and "but the prompt has" in error["message"]


def test_completions(http: httpx.Client) -> None:
    over = {"model": "default", "prompt": "Hi", "max_tokens": LIMIT}
    error = assert_openai_error(http.post("/v1/completions", json=over), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "max_tokens")
    assert NAMES_LIMIT in error["message"]
    error = assert_openai_error(
        http.post("/v1/completions", json={"model": "default", "prompt": LONG}), 400
    )
    assert NAMES_LIMIT in error["message"]
    fits = http.post("/v1/completions", json={**over, "max_tokens": 8})
    assert fits.status_code == 200, fits.text


def test_messages(http: httpx.Client) -> None:
    resp = http.post("/v1/messages", json=chat(LONG, max_tokens=8))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert NAMES_LIMIT in error["message"]
    # Agents send a fixed large max_tokens: it is fitted into the cap, not refused.
    resp = http.post("/v1/messages", json=chat("Hi", max_tokens=32000))
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    assert usage["input_tokens"] + usage["output_tokens"] <= LIMIT
