"""``--max-request-mb 1``: larger bodies get 413, declared or chunked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error

MIB = 1024 * 1024
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def url(launch_server: LaunchServer) -> str:
    return launch_server("--max-request-mb", "1").base_url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def chat_body(content_chars: int) -> bytes:
    messages = [{"role": "user", "content": "x" * content_chars}]
    return json.dumps({"model": "default", "messages": messages, "max_tokens": 1}).encode()


def in_chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_413(resp: httpx.Response) -> None:
    error = assert_openai_error(resp, 413)
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert "1 MB" in error["message"] and "--max-request-mb" in error["message"]


def test_a_declared_length_over_the_limit_gets_413(http: httpx.Client) -> None:
    body = chat_body(MIB)
    resp = http.post("/v1/chat/completions", content=body, headers=JSON)
    assert resp.request.headers["content-length"] == str(len(body))
    assert_413(resp)
    assert resp.headers.get("x-request-id")
    # The rest of the body was drained by the server: the connection still serves.
    assert http.post("/v1/chat/completions", content=chat_body(10), headers=JSON).status_code == 200


def test_a_chunked_body_over_the_limit_gets_413(http: httpx.Client) -> None:
    resp = http.post("/v1/chat/completions", content=in_chunks(chat_body(2 * MIB)), headers=JSON)
    assert "content-length" not in resp.request.headers
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert_413(resp)


def test_bodies_under_the_limit_are_served_chunked_or_not(http: httpx.Client) -> None:
    body = chat_body(MIB // 2)  # too long for the tiny model's window, not for the limit
    for content in (body, in_chunks(body)):
        resp = http.post("/v1/chat/completions", content=content, headers=JSON)
        assert assert_openai_error(resp, 400)["code"] == "context_length_exceeded"
    small = http.post("/v1/chat/completions", content=in_chunks(chat_body(10), 7), headers=JSON)
    assert small.status_code == 200 and small.json()["usage"]["completion_tokens"] == 1


def test_messages_get_an_anthropic_413(http: httpx.Client) -> None:
    body: Any = json.loads(chat_body(MIB))
    resp = http.post("/v1/messages", json=body)
    assert resp.status_code == 413
    payload = resp.json()
    assert payload["type"] == "error" and set(payload) == {"type", "error"}
    assert payload["error"]["type"] == "invalid_request_error"
    assert "--max-request-mb" in payload["error"]["message"]


def test_openai_sdk_sees_the_413(url: str) -> None:
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as info,
    ):
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x" * MIB}], max_tokens=1
        )
    assert info.value.status_code == 413
    assert info.value.code == "request_too_large"
