"""``--rate-limit 12``: the 13th inference request of a client in a minute gets 429.

Auth is off: a sent key only names the client. Each test uses its own key, so the
tests share one server without sharing a window.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error

LIMIT = 12
USER = [{"role": "user", "content": "Hi"}]
CHAT_BODY = {"model": "default", "messages": USER, "max_tokens": 1, "temperature": 0}


@pytest.fixture(scope="module")
def url(launch_server: LaunchServer) -> str:
    return launch_server("--rate-limit", str(LIMIT)).base_url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(http: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return http.post("/v1/chat/completions", json=CHAT_BODY, headers=headers)


def assert_retry_after(headers: Mapping[str, str]) -> int:
    seconds = int(headers["retry-after"])
    assert 1 <= seconds <= 60, headers
    return seconds


def test_the_thirteenth_request_raises_rate_limit_error(url: str, http: httpx.Client) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="client-a", max_retries=0) as client:
        for i in range(LIMIT):  # chat and completions share the client's window
            if i % 2:
                client.completions.create(model="default", prompt="Hi", max_tokens=1)
            else:
                client.chat.completions.create(**CHAT_BODY)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**CHAT_BODY)
    error = info.value
    assert error.status_code == 429
    assert error.type == "rate_limit_error" and error.code == "rate_limit_exceeded"
    body: Any = error.body  # the "error" object
    assert f"{LIMIT} requests per minute" in body["message"]
    seconds = assert_retry_after(error.response.headers)
    assert f"Retry in {seconds} s." in body["message"]
    assert error.response.headers.get("x-request-id")
    # Routes other than inference never count, and never get refused.
    for _ in range(LIMIT + 3):
        assert http.get("/health", headers=bearer("client-a")).status_code == 200
    assert http.get("/v1/models", headers=bearer("client-a")).status_code == 200
    assert chat(http, bearer("client-a")).status_code == 429


def test_keys_are_limited_independently(http: httpx.Client) -> None:
    # The key names the client whichever header carries it.
    for i in range(LIMIT):
        headers = bearer("client-b") if i % 2 else {"x-api-key": "client-b"}
        assert chat(http, headers).status_code == 200
    refused = chat(http, {"x-api-key": "client-b"})
    error = assert_openai_error(refused, 429)
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert_retry_after(refused.headers)
    assert chat(http, bearer("client-c")).status_code == 200
    assert chat(http, bearer("client-b")).status_code == 429


def test_without_a_key_the_address_is_the_client(http: httpx.Client) -> None:
    statuses = [chat(http, {}).status_code for _ in range(LIMIT + 2)]
    assert statuses == [200] * LIMIT + [429, 429]
    assert chat(http, bearer("client-d")).status_code == 200


def test_anthropic_sdk_gets_its_rate_limit_error(url: str, http: httpx.Client) -> None:
    with anthropic.Anthropic(base_url=url, api_key="client-e", max_retries=0) as client:
        for _ in range(LIMIT):  # count_tokens is an inference route too
            assert client.messages.count_tokens(model="default", messages=USER).input_tokens > 0
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model="default", messages=USER, max_tokens=1)
    error = info.value
    assert error.status_code == 429
    body: Any = error.body
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert body["error"]["type"] == "rate_limit_error"
    assert "requests per minute" in body["error"]["message"]
    assert_retry_after(error.response.headers)
    raw = http.post(
        "/v1/messages/count_tokens",
        json={"model": "default", "messages": USER},
        headers={"x-api-key": "client-e"},
    )
    assert raw.status_code == 429 and raw.json()["error"]["type"] == "rate_limit_error"
