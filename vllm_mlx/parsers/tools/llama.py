"""Meta Llama tool calls: 3.1/3.3 JSON and 3.2/4 pythonic lists."""

from __future__ import annotations

import ast
import re

from vllm_mlx.parsers.tools._json import DECODER, RawCall, call_from_obj, first_key_in
from vllm_mlx.parsers.tools._scan import Memo, bracket_end, skip_ws, tag_body, tag_end
from vllm_mlx.parsers.tools.base import ToolParser

PYTHON_TAG, PYTHON_START, PYTHON_END = "<|python_tag|>", "<|python_start|>", "<|python_end|>"
_CALL_KEYS = ("name", "type", "function")
_PYTHONIC = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_PYTHONIC_SO_FAR = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?")


class LlamaToolParser(ToolParser):
    """Llama 3.1/3.3 JSON tool calling (the whole reply; ``; `` between calls)::

        {"name": "get_weather", "parameters": {"city": "Paris"}}
        <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}

    Llama 3.2 / Llama 4 pythonic calls (Meta's Llama 4 prompt-format guide)::

        [get_weather(city="San Francisco", metric="celsius"), get_time()]
        <|python_start|>[get_weather(city="Paris")]<|python_end|>

    A bare reply counts as calls only at the start of the output, must carry
    ``parameters``/``arguments`` and, when tools are given, name one of them.
    """

    name = "llama"
    markers = (PYTHON_TAG, PYTHON_START)
    leading = True

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        if marker == PYTHON_START:
            return tag_end(text, PYTHON_START, PYTHON_END, final, self._memo)
        start = skip_ws(text, len(marker))
        if start == len(text):
            return None
        if text[start] == "{":
            call_like = first_key_in(text, _CALL_KEYS) if marker == "" else True
            if not call_like:
                return None if call_like is None else 0  # 0: a JSON answer, not a call
            return _objects_end(text, start, final, self._memo)
        if text[start] == "[":
            if _PYTHONIC.match(text, start):
                return bracket_end(text, start, self._memo, quotes="\"'")
            return None if _PYTHONIC_SO_FAR.fullmatch(text, start) else len(marker)
        return len(marker)  # not a call: verbatim (0 for a leading region)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        if marker == PYTHON_START:
            body = tag_body(region, PYTHON_START, PYTHON_END).strip()
        else:
            body = region[len(marker) :].strip()
        if body.startswith("["):
            return _pythonic_calls(body)
        return _json_calls(body, require_args=marker == "")


def _objects_end(text: str, start: int, final: bool, memo: Memo) -> int | None:
    """End of ``{...}`` or ``{...}; {...}``: waits to see whether a ``;`` follows."""
    end = bracket_end(text, start, memo)
    while end is not None:
        semi = skip_ws(text, end)
        if semi == len(text):
            return end if final else None
        nxt = skip_ws(text, semi + 1)
        if text[semi] != ";" or (nxt < len(text) and text[nxt] != "{"):
            return end
        if nxt == len(text):
            return end if final else None
        end = bracket_end(text, nxt, memo)
    return None


def _json_calls(body: str, require_args: bool) -> list[RawCall] | None:
    calls, pos = [], 0
    while True:
        try:
            obj, pos = DECODER.raw_decode(body, pos)
        except (ValueError, RecursionError):
            return None
        call = call_from_obj(obj, require_args=require_args)
        if call is None:
            return None
        calls.append(call)
        pos = skip_ws(body, pos)
        if pos == len(body):
            return calls
        if body[pos] != ";":
            return None
        pos = skip_ws(body, pos + 1)


def _pythonic_calls(body: str) -> list[RawCall] | None:
    try:
        tree = ast.parse(body, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return None
    calls = []
    for node in tree.body.elts:
        if not isinstance(node, ast.Call) or node.args:
            return None
        name = ast.unparse(node.func)
        if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
            return None
        args = {}
        for kw in node.keywords:
            if kw.arg is None:
                return None
            try:
                args[kw.arg] = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return None
        calls.append((name, args))
    return calls
