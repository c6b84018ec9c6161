"""The JSON schema that forces one tool call (``tool_choice`` required or named).

The constrained output is plain JSON; the API layer wraps it into its own
tool-call response::

    {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vllm_mlx.structured.grammar import SchemaError

REQUIRED = "required"  # mode: any one of the tools
_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


def tool_call_schema(tools: Sequence[Mapping[str, Any]], mode: str = REQUIRED) -> dict[str, Any]:
    """Schema of ``{"name": ..., "arguments": ...}`` for a forced tool call.

    ``tools`` are OpenAI tools (``{"type": "function", "function": {"name",
    "parameters"}}``) or flat ``{"name", "parameters" | "input_schema"}`` entries
    (Anthropic). ``mode`` is ``"required"`` (any of the tools: one ``anyOf``
    branch per tool) or the name of the one tool to call. Either way each branch
    pins ``name`` with a const and ``arguments`` with that tool's parameters.
    Raises :class:`SchemaError` for an unknown name, duplicate names or no tools.
    """
    specs = [_name_and_parameters(tool) for tool in tools]
    if not specs:
        raise SchemaError("tool_choice forces a tool call, but no tools were given")
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise SchemaError(f"tool names must be unique: {names}")
    if mode != REQUIRED:
        specs = [(name, params) for name, params in specs if name == mode]
        if not specs:
            raise SchemaError(f"tool_choice names {mode!r}, which is not among the tools {names}")
    calls = [_call_schema(name, params) for name, params in specs]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _name_and_parameters(tool: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    function = tool.get("function", tool)
    if not isinstance(function, Mapping):
        raise SchemaError(f"a tool must be an object, got {function!r}")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError("every tool needs a non-empty string name")
    parameters = function.get("parameters", function.get("input_schema"))
    if parameters is None:
        return name, dict(_NO_ARGUMENTS)
    if not isinstance(parameters, Mapping):
        raise SchemaError(f"the parameters of tool {name!r} must be a JSON schema object")
    return name, dict(parameters)
