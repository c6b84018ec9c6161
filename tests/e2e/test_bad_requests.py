"""A table of malformed requests: each is a 4xx with an OpenAI error body, never a crash.

Bodies are sent raw with httpx so the SDK cannot fix them up. Every case that
the server might wrongly accept carries a small ``max_tokens``, so a miss shows
up as a fast 200 instead of a long generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.fixtures.server import assert_openai_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Hi"}]


@dataclass(frozen=True)
class Bad:
    name: str
    path: str
    body: Any  # a JSON-able object, or raw bytes sent as they are
    status: tuple[int, ...] = (400,)
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None  # the offending field, named by error.param or the message


def chat(name: str, param: str | None = None, **fields: Any) -> Bad:
    body = {"model": "default", "messages": USER, "max_tokens": 4, **fields}
    return Bad(name, CHAT, {k: v for k, v in body.items() if v is not _DROP}, param=param)


def completion(name: str, param: str | None = None, **fields: Any) -> Bad:
    body = {"model": "default", "prompt": "Hi", "max_tokens": 4, **fields}
    return Bad(name, COMPLETIONS, {k: v for k, v in body.items() if v is not _DROP}, param=param)


_DROP = object()  # marks a field removed from the default body

CASES = [
    Bad("malformed_json", CHAT, b'{"model": "default", "messages": ['),
    Bad("trailing_garbage_json", CHAT, b'{"model": "default", "messages": []} xx'),
    Bad("empty_body", CHAT, b""),
    Bad("body_is_array", CHAT, [{"role": "user", "content": "Hi"}]),
    Bad("body_is_string", CHAT, "hello"),
    Bad("body_is_null", CHAT, None),
    chat("missing_messages", messages=_DROP, param="messages"),
    chat("empty_messages", messages=[], param="messages"),
    chat("messages_not_list", messages="Hi", param="messages"),
    chat("message_not_object", messages=["Hi"], param="messages"),
    chat("unknown_role", messages=[{"role": "wizard", "content": "Hi"}], param="messages"),
    chat("missing_role", messages=[{"content": "Hi"}], param="messages"),
    chat("user_without_content", messages=[{"role": "user"}], param="messages"),
    chat("content_is_number", messages=[{"role": "user", "content": 123}], param="messages"),
    chat(
        "content_part_unknown_type",
        messages=[{"role": "user", "content": [{"type": "hologram", "data": "x"}]}],
        param="messages",
    ),
    chat("model_not_string", model=123, param="model"),
    chat("temperature_negative", temperature=-1, param="temperature"),
    chat("temperature_string", temperature="hot", param="temperature"),
    chat("temperature_too_high", temperature=5.0, param="temperature"),
    chat("top_p_above_one", top_p=2, param="top_p"),
    chat("max_tokens_zero", max_tokens=0, param="max_tokens"),
    chat("max_tokens_negative", max_tokens=-5, param="max_tokens"),
    chat("max_tokens_huge", max_tokens=10**12),
    chat("max_tokens_string", max_tokens="ten", param="max_tokens"),
    chat("max_completion_tokens_zero", max_completion_tokens=0, param="max_completion_tokens"),
    chat("n_zero", n=0, param="n"),
    chat("n_too_many", n=1000, param="n"),
    chat("top_logprobs_50", logprobs=True, top_logprobs=50, param="top_logprobs"),
    chat("top_logprobs_without_logprobs", top_logprobs=2),
    chat("stop_ten_strings", stop=[f"s{i}" for i in range(10)], param="stop"),
    chat("stop_not_string", stop=5, param="stop"),
    chat("logit_bias_bad_key", logit_bias={"abc": 1}, param="logit_bias"),
    chat("logit_bias_value_500", logit_bias={"10": 500}, param="logit_bias"),
    chat("logit_bias_token_out_of_vocab", logit_bias={"999999": 5}),
    chat("response_format_unknown", response_format={"type": "yaml"}, param="response_format"),
    chat("presence_penalty_5", presence_penalty=5, param="presence_penalty"),
    chat("frequency_penalty_-3", frequency_penalty=-3, param="frequency_penalty"),
    chat("repetition_penalty_zero", repetition_penalty=0, param="repetition_penalty"),
    chat("min_p_above_one", min_p=1.5, param="min_p"),
    chat("stream_yes", stream="yes", param="stream"),
    chat("stream_options_without_stream", stream_options={"include_usage": True}),
    chat("seed_string", seed="abc", param="seed"),
    chat("tools_not_list", tools="get_weather", param="tools"),
    # Found by `make fuzz` (scripts/fuzz.py): each was a 500.
    chat("template_kwargs_set_tools", chat_template_kwargs={"tools": []}, param="chat_template"),
    chat("template_kwargs_set_messages", chat_template_kwargs={"messages": []}),
    chat("template_kwargs_named_self", chat_template_kwargs={"self": 1}),
    chat(
        "tool_choice_function_not_object",
        tools=[{"type": "function", "function": {"name": "f"}}],
        tool_choice={"type": "function", "function": "f"},
        param="tool_choice",
    ),
    chat(
        "tool_function_not_object",
        tools=[{"type": "function", "function": "f"}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        param="tool_choice",
    ),
    chat("repetition_penalty_denormal", repetition_penalty=5e-324, param="repetition_penalty"),
    completion("missing_prompt", prompt=_DROP, param="prompt"),
    completion("prompt_object", prompt={"text": "Hi"}, param="prompt"),
    completion("prompt_empty_list", prompt=[]),
    completion("prompt_token_out_of_vocab", prompt=[1, 2, 999999]),
    completion("prompt_negative_token", prompt=[1, -3]),
    completion("logprobs_above_5", logprobs=6, param="logprobs"),
    completion("max_tokens_negative", max_tokens=-1, param="max_tokens"),
    completion("temperature_string", temperature="warm", param="temperature"),
    completion("stop_ten_strings", stop=[f"s{i}" for i in range(10)], param="stop"),
    completion("n_zero", n=0, param="n"),
    completion(
        "repetition_penalty_denormal_logprobs",
        repetition_penalty=5e-324,
        logprobs=1,
        param="repetition_penalty",
    ),
    Bad(
        "form_encoded_body",
        CHAT,
        b"model=default&messages=hi",
        status=(400, 415),
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Bad(
        "text_plain_body",
        COMPLETIONS,
        b"just some words",
        status=(400, 415),
        headers={"content-type": "text/plain"},
    ),
]


@pytest.fixture
def http(tiny_http: httpx.Client) -> httpx.Client:
    return tiny_http


def _send(http: httpx.Client, case: Bad) -> httpx.Response:
    raw = isinstance(case.body, bytes)
    content = case.body if raw else json.dumps(case.body).encode()
    headers = {"content-type": "application/json", **case.headers}
    return http.post(case.path, content=content, headers=headers)


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({(c.path, c.name) for c in CASES}) == len(CASES)


def _case_id(case: Bad) -> str:
    return f"{'chat' if case.path == CHAT else 'completions'}-{case.name}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_request(http: httpx.Client, case: Bad) -> None:
    resp = _send(http, case)
    error = assert_openai_error(resp, case.status)
    if case.param is not None:
        named = str(error["param"] or "").startswith(case.param) or case.param in error["message"]
        assert named, f"error does not name {case.param!r}: {error}"
    assert resp.headers.get("x-request-id")


def test_unknown_endpoint_is_404_json(http: httpx.Client) -> None:
    assert_openai_error(http.post("/v1/chat/complete", json={}), 404)


def test_wrong_method_is_405_json(http: httpx.Client) -> None:
    assert_openai_error(http.get(CHAT), 405)


def test_server_survives_the_table(http: httpx.Client) -> None:
    for case in CASES:
        _send(http, case)
    assert http.get("/health").status_code == 200
    body = {"model": "default", "messages": USER, "max_tokens": 3, "temperature": 0}
    resp = http.post(CHAT, json=body)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["usage"]["completion_tokens"] == 3
    assert data["choices"][0]["message"]["content"]
