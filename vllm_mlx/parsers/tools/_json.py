"""JSON helpers shared by the tool-call families: strict parsing, call objects."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

RawCall = tuple[str, dict[str, Any]]  # (function name, arguments)

INVALID: Any = object()  # what `loads` returns for text that is not JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # strict: no NaN/Infinity


def loads(text: str) -> Any:
    """Parse strict JSON; ``INVALID`` instead of an exception."""
    try:
        return DECODER.decode(text)
    except (ValueError, RecursionError):
        return INVALID


def literal(text: str) -> Any:
    """Parse a Python literal (``{'a': True}``); ``INVALID`` instead of an exception."""
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return INVALID


def call_from_obj(obj: Any, *, require_args: bool = False) -> RawCall | None:
    """``{"name": ..., "arguments"|"parameters": {...}}`` -> ``(name, arguments)``."""
    if isinstance(obj, dict) and "name" not in obj and isinstance(obj.get("function"), dict):
        obj = obj["function"]  # {"type": "function", "function": {...}}
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    key = "arguments" if "arguments" in obj else "parameters" if "parameters" in obj else None
    if key is None:
        return None if require_args else (obj["name"].strip(), {})
    args = obj[key]
    if isinstance(args, str):  # arguments sent as a JSON string
        args = loads(args) if args.strip() else {}
    if args is None and not require_args:
        args = {}
    if not isinstance(args, dict):
        return None
    return obj["name"].strip(), args


def calls_from_json(text: str, *, require_args: bool = False) -> list[RawCall] | None:
    """One call object or a non-empty list of them, as JSON text."""
    value = loads(text.strip())
    items = value if isinstance(value, list) else [value]
    calls = [call_from_obj(item, require_args=require_args) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


_FIRST_KEY = re.compile(r'\[?\s*\{\s*"([^"\\]*)"')
_FIRST_KEY_SO_FAR = re.compile(r'\[?\s*(?:\{\s*(?:"[^"\\]*)?)?')


def first_key_in(text: str, keys: Sequence[str]) -> bool | None:
    """Whether bare JSON text opens with an object whose first key is in ``keys``.

    ``None`` while the first key is still incomplete.
    """
    m = _FIRST_KEY.match(text)
    if m:
        return m.group(1) in keys
    return None if _FIRST_KEY_SO_FAR.fullmatch(text) else False
