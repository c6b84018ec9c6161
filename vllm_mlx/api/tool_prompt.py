"""Tools for chat templates that know nothing of tools (Hermes-style fallback).

Such templates drop ``tools`` and ``tool_calls``; without this the model would
never see the tools offered, nor its own earlier calls. The wire format is the
one the ``hermes`` parser reads back::

    <tools>                                                        (system message)
    get_weather: "Current weather of a city."
      city: string {"enum":["Paris","Rome"]} "City name"
      days?: integer = 1 {"minimum":1}
    </tools>
    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>
    <tool_response>{...}</tool_response>                          (tool results)

The tool list is compact rather than one ``json.dumps`` per tool: Open WebUI
sends 36 tools (26k characters of JSON), which nearly fill a small model's
window. Each function is a line ``name: "description"`` and each argument a line
``name: type = default {other JSON Schema keywords} "description"`` (``?`` marks
an optional argument). Only what says nothing is cut: the ``{"type": "function",
"function": ...}`` wrapper, ``"type": "object"`` of the arguments, ``$schema``,
titles that merely repeat a name, separators' spaces and ``\\uXXXX`` escapes.
The text is a pure function of the tools, so the prefix cache still hits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vllm_mlx.backend.tokenizer import Tokenizer

_INSTRUCTIONS = (
    "You may call one or more functions to assist with the user query. "
    "The functions are listed within <tools></tools>:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, reply with a JSON object with its name and arguments within "
    '<tool_call></tool_call> tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)


def inline_tools(
    messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages with tool definitions, calls and results written out as text."""
    out = [_inline_message(m) for m in messages]
    if tools:
        block = _INSTRUCTIONS.format(tools=render_tool_list(tools))
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


# -- the compact tool list ------------------------------------------------------------

# Keywords whose value is one schema, a list of schemas, or a map of name -> schema.
_SCHEMA_KEYS = frozenset({"items", "additionalProperties", "not", "if", "then", "else"})
_SCHEMA_LIST_KEYS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_MAP_KEYS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
# What an argument's line says in its own syntax rather than as JSON.
_ARGUMENT_LAYOUT_KEYS = frozenset({"type", "default", "description"})


def render_tool_list(tools: Sequence[dict[str, Any]]) -> str:
    """The compact text of ``tools`` (OpenAI function tools), one line per function/argument."""
    return "\n".join(_render_tool(t) for t in tools)


def _render_tool(tool: dict[str, Any]) -> str:
    function = tool.get("function")
    params = (function.get("parameters") or {}) if isinstance(function, dict) else None
    if (
        tool.get("type", "function") != "function"
        or not isinstance(function, dict)
        or not isinstance(function.get("name"), str)
        or not isinstance(params, dict)
        or not isinstance(params.get("properties", {}), dict)
    ):
        return _json(tool)  # not a function tool we can lay out: shown as sent
    name: str = function["name"]
    rest = _clean_schema(params, title=name)
    properties: dict[str, Any] = rest.pop("properties", {})
    required = _pop_required(rest, properties)
    if rest.get("type") == "object":
        del rest["type"]
    head = _json_key(name) + (f" {_json(rest)}" if rest else "")
    if function.get("description"):
        head += f": {_json(function['description'])}"
    args = [f"  {_render_argument(k, v, k in required)}" for k, v in properties.items()]
    return "\n".join([head, *args])


def _pop_required(params: dict[str, Any], properties: dict[str, Any]) -> set[str]:
    """The required arguments (marked by the lines); what they cannot say stays in ``params``."""
    required = params.pop("required", [])
    if not isinstance(required, list):
        params["required"] = required
        return set()
    marked = {r for r in required if isinstance(r, str) and r in properties}
    unmarked = [r for r in required if not (isinstance(r, str) and r in marked)]
    if unmarked:
        params["required"] = unmarked
    return marked


def _render_argument(name: str, schema: Any, required: bool) -> str:
    text = _json_key(name) + ("" if required else "?") + ":"
    if not isinstance(schema, dict):
        return f"{text} {_json(schema)}"
    kind = schema.get("type")
    if isinstance(kind, str):
        text += f" {kind}"
    elif isinstance(kind, list) and kind and all(isinstance(k, str) for k in kind):
        text += " " + "|".join(kind)
    else:
        kind = None
    if "default" in schema:
        text += f" = {_json(schema['default'])}"
    other = {k: v for k, v in schema.items() if k not in _ARGUMENT_LAYOUT_KEYS}
    if kind is None and "type" in schema:
        other["type"] = schema["type"]
    if other:
        text += f" {_json(other)}"
    description = schema.get("description")
    if description is not None:
        text += f" {_json(description)}"
    return text


def _clean_schema(schema: dict[str, Any], title: str | None = None) -> dict[str, Any]:
    """``schema`` without ``$schema`` and the titles generators write from names.

    ``title`` is the name this schema was generated from (tool, property or
    ``$defs`` entry); a title is dropped only when it is that name or pydantic's
    title-cased form of it. Properties *named* "title" are untouched.
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$schema" or (key == "title" and _is_auto_title(value, title)):
            continue
        if key in _SCHEMA_MAP_KEYS and isinstance(value, dict):
            value = {k: _clean_any(v, k) for k, v in value.items()}
        elif key in _SCHEMA_LIST_KEYS and isinstance(value, list):
            value = [_clean_any(v) for v in value]
        elif key in _SCHEMA_KEYS:
            value = [_clean_any(v) for v in value] if isinstance(value, list) else _clean_any(value)
        out[key] = value
    return out


def _clean_any(value: Any, title: str | None = None) -> Any:
    return _clean_schema(value, title) if isinstance(value, dict) else value


def _is_auto_title(value: Any, name: str | None) -> bool:
    # pydantic: field titles are ``name.title().replace("_", " ")``, model titles the class name.
    return name is not None and value in (name, name.title().replace("_", " ").strip())


def _json_key(name: str) -> str:
    """A name as is when it reads unambiguously, else as a JSON string."""
    plain = name.isascii() and name != "" and all(c.isalnum() or c in "_-." for c in name)
    return name if plain else _json(name)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- tool calls and results in the conversation -----------------------------------------


def _inline_message(message: dict[str, Any]) -> dict[str, Any]:
    if message["role"] == "tool":
        return {
            "role": "user",
            "content": f"<tool_response>\n{message['content']}\n</tool_response>",
        }
    calls = message.get("tool_calls")
    if message["role"] != "assistant" or not calls:
        return message
    rendered = [
        "<tool_call>\n"
        + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
        + "\n</tool_call>"
        for c in calls
    ]
    text = "\n".join([message.get("content") or "", *rendered]).strip()
    return {"role": "assistant", "content": text}


def render_with_tools(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    /,
    **template_kwargs: Any,
) -> str:
    """The chat template's rendering, with tools inlined where the template ignores them.

    The arguments before ``/`` are positional: a template kwarg may share their names.
    """
    if not tokenizer.template_knows_tools and (tools or _has_tool_turns(messages)):
        messages, tools = inline_tools(messages, tools), None
    return tokenizer.render_chat(messages, tools=tools, **template_kwargs)


def _has_tool_turns(messages: Sequence[dict[str, Any]]) -> bool:
    return any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
