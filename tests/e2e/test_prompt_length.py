"""A prompt that cannot fit the window is refused before tokenizing (``at least N``).

The tiny llama's window is 2048 tokens and its longest token 13 characters, so any
text of more than 2047 * 13 characters is refused on its length alone.
"""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.fixtures.server import assert_openai_error

HUGE = "lorem ipsum " * 50_000  # 600,000 characters: at least 46,154 tokens
AT_LEAST = 600_000 // 13 + 1
OVER = "hello " * 3000  # 18,000 characters, about 3,000 tokens: only the count shows it


def at_least(message: object) -> int:
    """N of "the prompt has at least N tokens" (the template adds a few characters)."""
    found = re.search(r"the prompt has at least (\d+) tokens", str(message))
    assert found, message
    return int(found.group(1))


def assert_fast_refusal(error: dict[str, object], param: str) -> None:
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == param
    assert "maximum context length is 2048 tokens" in str(error["message"])
    assert AT_LEAST <= at_least(error["message"]) < AT_LEAST + 20


def test_chat_and_completions(tiny_http: httpx.Client) -> None:
    chat = {"model": "default", "messages": [{"role": "user", "content": HUGE}], "max_tokens": 1}
    resp = tiny_http.post("/v1/chat/completions", json=chat)
    assert_fast_refusal(assert_openai_error(resp, 400), "messages")
    resp = tiny_http.post("/v1/completions", json={"model": "default", "prompt": HUGE})
    assert_fast_refusal(assert_openai_error(resp, 400), "prompt")


def test_openai_sdk(tiny_server: str) -> None:
    with (
        openai.OpenAI(base_url=f"{tiny_server}/v1", api_key="x", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as info,
    ):
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": HUGE}], max_tokens=1
        )
    assert info.value.code == "context_length_exceeded"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_messages_and_count_tokens(tiny_http: httpx.Client, path: str) -> None:
    body = {"model": "default", "messages": [{"role": "user", "content": HUGE}], "max_tokens": 1}
    resp = tiny_http.post(path, json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert AT_LEAST <= at_least(error["message"]) < AT_LEAST + 20


def test_a_prompt_just_over_the_window_is_still_counted(tiny_http: httpx.Client) -> None:
    chat = {"model": "default", "messages": [{"role": "user", "content": OVER}], "max_tokens": 1}
    error = assert_openai_error(tiny_http.post("/v1/chat/completions", json=chat), 400)
    assert error["code"] == "context_length_exceeded"
    assert "at least" not in str(error["message"])
    assert "but the prompt has" in str(error["message"])
