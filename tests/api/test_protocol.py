"""OpenAI request models: strict types, documented limits, message content rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from vllm_mlx.api.openai.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    ImagePart,
    TextPart,
)

USER = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    fields.setdefault("messages", USER)
    return ChatCompletionRequest.model_validate_json(json.dumps(fields))


def completion(**fields: Any) -> CompletionRequest:
    fields.setdefault("prompt", "hi")
    return CompletionRequest.model_validate_json(json.dumps(fields))


def _error(fn: Any, **fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        fn(**fields)
    return str(info.value)


def test_minimal_chat_defaults() -> None:
    body = chat()
    assert body.model == "default"
    assert body.n == 1
    assert body.stream is False
    assert body.temperature is None and body.top_p is None and body.max_tokens is None
    assert body.stop_list == ()
    assert body.include_usage is False
    assert body.logprobs is False and body.top_logprobs is None
    assert body.messages[0].role == "user"


def test_unknown_fields_are_ignored() -> None:
    body = chat(some_future_field={"x": 1}, metadata="m")
    assert not hasattr(body, "some_future_field")


def test_integer_temperature_is_accepted_as_float() -> None:
    body = chat(temperature=1, top_p=1, presence_penalty=0)
    assert body.temperature == 1.0
    assert isinstance(body.temperature, float)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", "yes"),
        ("stream", 1),
        ("temperature", "0.5"),
        ("max_tokens", "10"),
        ("max_tokens", 10.0),
        ("max_tokens", 1.5),
        ("n", True),
        ("seed", "42"),
        ("stop", 5),
        ("stop", [1, 2]),
        ("logit_bias", {"1": "2"}),
        ("logprobs", 1),
        ("messages", "hi"),
        ("messages", [{"role": "user", "content": 123}]),
        ("model", 7),
        ("stream_options", {"include_usage": "true"}),
    ],
)
def test_wrong_types_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        chat(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.01),
        ("top_p", 1.5),
        ("top_k", -2),
        ("min_p", 1.1),
        ("n", 0),
        ("n", 17),
        ("max_tokens", 0),
        ("max_completion_tokens", 0),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -2.5),
        ("repetition_penalty", 0.0),
        ("top_logprobs", 21),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: Any) -> None:
    extra = {"logprobs": True} if field == "top_logprobs" else {}
    with pytest.raises(ValidationError):
        chat(**{field: value}, **extra)


def test_edge_values_are_accepted() -> None:
    body = chat(temperature=2.0, top_p=0.0, top_k=-1, n=16, max_tokens=1, min_p=1.0)
    assert (body.temperature, body.top_k, body.n) == (2.0, -1, 16)


def test_stop_as_string_or_list() -> None:
    assert chat(stop="END").stop_list == ("END",)
    assert chat(stop=["a", "b", "c", "d"]).stop_list == ("a", "b", "c", "d")
    assert chat(stop=None).stop_list == ()


def test_more_than_four_stops_rejected() -> None:
    assert "at most 4" in _error(chat, stop=["a", "b", "c", "d", "e"])


@pytest.mark.parametrize("stop", ["", ["ok", ""]])
def test_empty_stop_rejected(stop: Any) -> None:
    assert "must not be empty" in _error(chat, stop=stop)


def test_logit_bias_accepts_token_ids() -> None:
    assert chat(logit_bias={"5": 10, "7": -100.0}).logit_bias == {"5": 10.0, "7": -100.0}


@pytest.mark.parametrize("key", ["x", "1.5", "", " 1", "0x1f"])
def test_logit_bias_key_must_be_a_token_id(key: str) -> None:
    assert "is not a token id" in _error(chat, logit_bias={key: 1.0})


@pytest.mark.parametrize("value", [100.5, -101])
def test_logit_bias_value_range(value: float) -> None:
    assert "must be in [-100, 100]" in _error(chat, logit_bias={"3": value})


def test_stream_options_need_stream() -> None:
    assert "only allowed when stream is true" in _error(
        chat, stream_options={"include_usage": True}
    )
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage


def test_top_logprobs_needs_logprobs() -> None:
    assert "requires logprobs" in _error(chat, top_logprobs=2)
    assert chat(top_logprobs=0).top_logprobs == 0  # zero asks for nothing
    assert chat(logprobs=True, top_logprobs=20).top_logprobs == 20


def test_messages_must_not_be_empty() -> None:
    with pytest.raises(ValidationError):
        chat(messages=[])


def test_unknown_role_rejected() -> None:
    with pytest.raises(ValidationError):
        chat(messages=[{"role": "robot", "content": "beep"}])


@pytest.mark.parametrize("role", ["system", "developer", "user", "tool"])
def test_non_assistant_messages_need_content(role: str) -> None:
    assert f"a '{role}' message needs content" in _error(
        chat, messages=[{"role": role, "content": None}]
    )


def test_assistant_needs_content_or_tool_calls() -> None:
    assert "needs content or tool_calls" in _error(chat, messages=[{"role": "assistant"}])
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = chat(messages=[*USER, {"role": "assistant", "content": None, "tool_calls": [call]}])
    message = body.messages[1]
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.name == "f"
    assert chat(messages=[{"role": "assistant", "content": ""}]).messages[0].content == ""


def test_tool_message_with_call_id() -> None:
    body = chat(messages=[{"role": "tool", "content": "42", "tool_call_id": "c1"}])
    assert body.messages[0].tool_call_id == "c1"


def test_tool_call_defaults_and_type() -> None:
    call = ChatMessage.model_validate(
        {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}
    ).tool_calls
    assert call is not None
    assert (call[0].id, call[0].type, call[0].function.arguments) == ("", "function", "{}")
    with pytest.raises(ValidationError):
        ChatMessage.model_validate(
            {"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f"}}]}
        )


def test_content_parts() -> None:
    parts = [
        {"type": "text", "text": "look: "},
        {"type": "image_url", "image_url": {"url": "data:..."}},
    ]
    content = chat(messages=[{"role": "user", "content": parts}]).messages[0].content
    assert isinstance(content, list)
    assert isinstance(content[0], TextPart) and content[0].text == "look: "
    assert isinstance(content[1], ImagePart)


@pytest.mark.parametrize(
    "part", [{"type": "audio", "data": "x"}, {"type": "text"}, {"type": "text", "text": 5}]
)
def test_bad_content_parts_rejected(part: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        chat(messages=[{"role": "user", "content": [part]}])


def test_response_format_types() -> None:
    assert chat(response_format={"type": "json_object"}).response_format is not None
    with pytest.raises(ValidationError):
        chat(response_format={"type": "yaml"})


@pytest.mark.parametrize("prompt", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_completion_prompt_forms(prompt: Any) -> None:
    assert completion(prompt=prompt).prompt == prompt


@pytest.mark.parametrize("prompt", [["a", 1], [1, "a"], 5, None, [[1, "a"]]])
def test_completion_prompt_bad_forms(prompt: Any) -> None:
    with pytest.raises(ValidationError):
        completion(prompt=prompt)


def test_completion_prompt_required() -> None:
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate_json('{"model": "m"}')


def test_completion_logprobs_is_a_count() -> None:
    assert completion(logprobs=5).logprobs == 5
    assert completion(logprobs=0).logprobs == 0
    for bad in (6, -1, True):
        with pytest.raises(ValidationError):
            completion(logprobs=bad)


def test_completion_shares_sampling_checks() -> None:
    assert "at most 4" in _error(completion, stop=["1", "2", "3", "4", "5"])
    with pytest.raises(ValidationError):
        completion(stream="true")


@pytest.mark.parametrize("make", [chat, completion], ids=["chat", "completion"])
def test_repetition_policy_override_values(make: Any) -> None:
    assert make().repetition_policy_override is None
    assert make(repetition_policy_override="strict").repetition_policy_override == "strict"
    assert make(repetition_policy_override="safe").repetition_policy_override == "safe"
    for bad in ("off", "STRICT", "", 1):
        assert "repetition_policy_override" in _error(make, repetition_policy_override=bad)


def embedding(**fields: Any) -> EmbeddingRequest:
    return EmbeddingRequest.model_validate_json(json.dumps(fields))


@pytest.mark.parametrize("value", ["hi", ["a", "b"], [1, 2], [[1], [2, 3]]])
def test_embedding_input_shapes(value: Any) -> None:
    body = embedding(input=value)
    assert body.input == value
    assert (body.model, body.encoding_format, body.truncate) == ("default", "float", False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ([], "empty"),
        (["a", ""], "input[1] is an empty string"),
        ([[1], []], "input[1] is an empty token list"),
        ([3, -1], "not negative"),
        ([[3, -1]], "input[0]: token ids are not negative"),
        (["a"] * 2049, "at most 2048"),
    ],
)
def test_embedding_input_refusals(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):
        embedding(input=value)


@pytest.mark.parametrize("fields", [{"input": 1}, {"input": "a", "dimensions": 0}, {}])
def test_embedding_field_types(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        embedding(**fields)
