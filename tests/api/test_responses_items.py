"""Responses input items and tools → template messages and chat-shaped function tools."""

from __future__ import annotations

from typing import Any

import pytest

from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.openai.responses.items import function_tools, namespaces, template_messages

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def test_string_input_is_one_user_turn() -> None:
    assert template_messages("Hi") == [{"role": "user", "content": "Hi"}]


def test_messages_with_and_without_type_and_parts() -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "S"}]},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "A"}, {"type": "input_text", "text": "B"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Yes", "annotations": []}],
        },
    ]
    assert template_messages(items) == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "S"},
        {"role": "user", "content": "AB"},
        {"role": "assistant", "content": "Yes"},
    ]


def test_assistant_text_and_calls_merge_into_one_turn() -> None:
    items: list[Any] = [
        {"role": "user", "content": "Weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # not replayed
        {"role": "assistant", "content": "Let me look."},
        call("c1"),
        call("c2", arguments='{"city": "Rome"}'),
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "rain"}],
        },
    ]
    out = template_messages(items)
    assert out[1] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            },
            {
                "id": "c2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
            },
        ],
    }
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_arguments_that_are_not_json_stay_text() -> None:
    out = template_messages([call("c1", arguments="not json")])
    assert out[0]["tool_calls"][0]["function"]["arguments"] == "not json"


def test_prefix_comes_first_and_is_not_changed() -> None:
    prefix = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    out = template_messages([call("c1")], prefix)
    assert out[0] == prefix[0]
    assert out[1]["content"] == "Hello" and out[1]["tool_calls"][0]["id"] == "c1"
    assert "tool_calls" not in prefix[1]  # the stored conversation is never mutated
    again = template_messages([call("c2")], out)
    assert [c["id"] for c in again[1]["tool_calls"]] == ["c1", "c2"]
    assert [c["id"] for c in out[1]["tool_calls"]] == ["c1"]


def test_output_items_replay_as_input() -> None:
    # A response's output items are valid input items (how the store keeps a turn).
    output = [
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "hm"}],
        },
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hi!", "annotations": [], "logprobs": []}],
        },
    ]
    assert template_messages(output) == [{"role": "assistant", "content": "Hi!"}]


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ({"type": "item_reference", "id": "x"}, "'item_reference'"),
        ({"type": "web_search_call", "id": "x"}, "'web_search_call'"),
        ({"role": "tool", "content": "x"}, "role"),
        ({"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}, "input_image"),
        ({"role": "user", "content": [{"type": "bogus"}]}, "'bogus'"),
        ({"role": "user", "content": 3}, "content"),
        ({"type": "function_call", "call_id": "c1", "name": "f"}, "arguments"),
        ({"type": "function_call_output", "call_id": "c1"}, "output"),
        ("just text", "object"),
    ],
)
def test_bad_items_are_400s_that_name_them(item: Any, named: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        template_messages([{"role": "user", "content": "ok"}, item])
    assert named in err.value.message
    assert err.value.param is not None and err.value.param.startswith("input.1")


def test_function_tools_become_chat_shape() -> None:
    assert function_tools([WEATHER]) == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert function_tools(None) is None and function_tools([]) is None


def test_tool_without_parameters_takes_an_empty_object() -> None:
    (tool,) = function_tools([{"type": "function", "name": "now"}]) or []
    assert tool["function"]["parameters"] == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    "kind", ["web_search", "file_search", "computer_use_preview", "code_interpreter", "mcp"]
)
def test_hosted_tools_are_refused_by_name(kind: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        function_tools([WEATHER, {"type": kind}])
    assert repr(kind) in err.value.message and err.value.param == "tools"


def test_nameless_function_tool_is_refused() -> None:
    with pytest.raises(InvalidRequest) as err:
        function_tools([{"type": "function", "parameters": {}}])
    assert err.value.param == "tools.0.name"


def test_namespace_tools_are_opened() -> None:
    group = {
        "type": "namespace",
        "name": "agents",
        "description": "Sub-agents",
        "tools": [
            {"type": "function", "name": "spawn", "parameters": {"type": "object"}},
        ],
    }
    tools = function_tools([WEATHER, group]) or []
    assert [t["function"]["name"] for t in tools] == ["get_weather", "spawn"]
    assert namespaces([WEATHER, group]) == {"spawn": "agents"}


def test_hosted_tools_inside_a_namespace_are_refused() -> None:
    group = {"type": "namespace", "name": "g", "tools": [{"type": "web_search"}]}
    with pytest.raises(InvalidRequest, match="'web_search'"):
        function_tools([group])
