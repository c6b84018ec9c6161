"""Typing of textual argument values (XML-style formats) from the tools' JSON schemas."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from vllm_mlx.parsers.tools._json import INVALID, RawCall, calls_from_json, literal, loads


def index_tools(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """OpenAI tool definitions -> ``{name: parameters schema}``."""
    out: dict[str, Mapping[str, Any]] = {}
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            out[fn["name"]] = params if isinstance(params, Mapping) else {}
    return out


def prop_schema(schemas: Mapping[str, Mapping[str, Any]], tool: str, key: str) -> Any:
    props = schemas.get(tool, {}).get("properties")
    return props.get(key) if isinstance(props, Mapping) else None


def coerce(value: str, schema: Any) -> Any:
    """Type a textual argument value (XML-style formats) using its JSON schema.

    Declared strings stay verbatim; other values are read as JSON (Python literals
    for objects/arrays, ``True``/``False``/``None`` for booleans/null); anything
    unreadable stays a string.
    """
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    kinds = set(kind) if isinstance(kind, list) else {kind} if isinstance(kind, str) else set()
    if "string" in kinds:
        return value
    text = value.strip()
    if "boolean" in kinds and text in ("True", "False"):
        return text == "True"
    if "null" in kinds and text == "None":
        return None
    parsed = loads(text)
    if parsed is INVALID and kinds & {"object", "array"}:
        parsed = literal(text)
    return value if parsed is INVALID else parsed


_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)</function>", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.S)


def _spans(pattern: re.Pattern[str], text: str) -> list[re.Match[str]] | None:
    """All matches of ``pattern``, or None if anything but whitespace lies between."""
    found, pos = [], 0
    for m in pattern.finditer(text):
        if text[pos : m.start()].strip():
            return None
        found.append(m)
        pos = m.end()
    return None if text[pos:].strip() else found


def xml_calls(text: str, schemas: Mapping[str, Mapping[str, Any]]) -> list[RawCall] | None:
    """Qwen3-Coder style ``<function=f><parameter=k>\\nv\\n</parameter></function>``."""
    functions = _spans(_FUNCTION, text)
    if not functions:
        return None
    calls = []
    for fn in functions:
        name, params = fn.group(1).strip(), _spans(_PARAMETER, fn.group(2))
        if params is None:
            return None
        args = {}
        for p in params:
            key, value = p.group(1).strip(), p.group(2)
            value = value[1:] if value.startswith("\n") else value
            value = value[:-1] if value.endswith("\n") else value
            args[key] = coerce(value, prop_schema(schemas, name, key))
        calls.append((name, args))
    return calls


def json_or_xml_calls(body: str, schemas: Mapping[str, Mapping[str, Any]]) -> list[RawCall] | None:
    """A tag body holding either JSON call objects or Qwen3-Coder style XML (see xml_calls)."""
    if body.lstrip().startswith("<function="):
        return xml_calls(body, schemas)
    return calls_from_json(body)
