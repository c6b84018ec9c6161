"""MeetKai Functionary tool calls: v3.1 ``<function=…>`` and v3.2 ``>>>recipient``."""

from __future__ import annotations

import re

from vllm_mlx.parsers.tools._json import RawCall, loads
from vllm_mlx.parsers.tools._scan import bracket_end, find_from, skip_ws, tag_body, tag_end
from vllm_mlx.parsers.tools.base import ToolParser

RECIPIENT, FUNCTION, FUNCTION_END = ">>>", "<function=", "</function>"
_NAME = re.compile(r"[\w.\-]*")
_FUNCTION_HEAD = re.compile(r"([\w.\-]+)>")


class FunctionaryToolParser(ToolParser):
    """v3.1 (meetkai-functionary-medium-v3.1 chat template)::

        <function=get_weather>{"city": "Paris"}</function>

    v3.2 (v3.2 chat template): each message part is ``>>>recipient\\n…``; the
    generation prompt already ends with ``>>>``, so the first recipient comes
    bare. ``all`` is text for the user; ``python`` may carry raw code::

        all
        Let me check.>>>get_weather
        {"city": "Paris"}>>>python
        print(1)
    """

    name = "functionary"
    markers = (RECIPIENT, FUNCTION)
    leading = True

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        if marker == FUNCTION:
            return tag_end(text, FUNCTION, FUNCTION_END, final, self._memo)
        # ">>>name\n…", or "name\n…" bare at the start (marker ""). Anything else is
        # no recipient: the marker alone is verbatim text (0: the start is no call).
        start = len(marker)
        name_match = _NAME.match(text, start)
        newline = name_match.end() if name_match else start
        if newline == len(text):
            return None
        if text[newline] != "\n" or newline == start:
            return start
        name, head = text[start:newline], newline + 1
        if name == "all":
            return head
        body = skip_ws(text, head)
        if body == len(text):
            return None
        if text[body] == "{":
            return bracket_end(text, body, self._memo)
        if name == "python":
            i = find_from(text, RECIPIENT, head, self._memo)
            return i if i >= 0 else len(text) if final else None
        return start

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        if marker == FUNCTION:
            head = _FUNCTION_HEAD.match(region, len(FUNCTION))
            body = tag_body(region, FUNCTION, FUNCTION_END)
            args = loads(body[head.end() - len(FUNCTION) :].strip()) if head else None
            return [(head.group(1), args)] if head and isinstance(args, dict) else None
        name, _, payload = region[len(marker) :].partition("\n")
        if name == "all":
            return []
        if name == "python" and not payload.lstrip().startswith("{"):
            return [(name, {"code": payload.rstrip()})]
        args = loads(payload.strip())
        return [(name, args)] if isinstance(args, dict) else None
