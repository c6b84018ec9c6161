"""tool_call_schema: forced tool calls as plain JSON."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tests.structured.schemas import TOOLS
from vllm_mlx.structured import SchemaError, compile_json_schema, tool_call_schema


def _valid(schema: dict[str, Any], instance: Any) -> bool:
    try:
        jsonschema.validate(instance, schema)
    except jsonschema.ValidationError:
        return False
    return True


def test_required_accepts_any_tool() -> None:
    schema = tool_call_schema(TOOLS, "required")
    assert _valid(schema, {"name": "add", "arguments": {"a": 1, "b": 2}})
    assert _valid(schema, {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}})
    assert not _valid(schema, {"name": "add", "arguments": {"city": "Oslo", "unit": "celsius"}})
    assert not _valid(schema, {"name": "nope", "arguments": {}})
    assert not _valid(schema, {"name": "add"})


def test_named_tool_pins_the_name() -> None:
    schema = tool_call_schema(TOOLS, "add")
    assert schema["properties"]["name"] == {"const": "add"}
    assert _valid(schema, {"name": "add", "arguments": {"a": 1, "b": 2}})
    weather = {"name": "get_weather", "arguments": {"city": "x", "unit": "celsius"}}
    assert not _valid(schema, weather)


def test_flat_and_anthropic_tools() -> None:
    tools = [
        {"name": "ping"},  # no parameters: an empty object
        {"name": "echo", "input_schema": {"properties": {"s": {"type": "string"}}}},
    ]
    schema = tool_call_schema(tools)
    assert _valid(schema, {"name": "ping", "arguments": {}})
    assert _valid(schema, {"name": "echo", "arguments": {"s": "hi"}})


@pytest.mark.parametrize(
    ("tools", "mode", "fragment"),
    [
        ([], "required", "no tools"),
        (TOOLS, "missing", "not among"),
        ([*TOOLS, TOOLS[0]], "required", "unique"),
        ([{"type": "function", "function": {"parameters": {}}}], "required", "name"),
        ([{"name": "x", "parameters": "nope"}], "required", "parameters"),
    ],
)
def test_bad_tools_raise_schema_error(tools: list[Any], mode: str, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment):
        tool_call_schema(tools, mode)


def test_tool_call_schemas_compile(tiny_info: Any) -> None:
    compile_json_schema(tool_call_schema(TOOLS, "required"), tiny_info)
    compile_json_schema(tool_call_schema(TOOLS, "get_weather"), tiny_info)
