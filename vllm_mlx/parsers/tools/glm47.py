"""GLM-4.5 / 4.6 / 4.7 tool calls (``<arg_key>``/``<arg_value>`` pairs)."""

from __future__ import annotations

import re

from vllm_mlx.parsers.tools._args import coerce, prop_schema
from vllm_mlx.parsers.tools._json import RawCall
from vllm_mlx.parsers.tools._scan import tag_body, tag_end
from vllm_mlx.parsers.tools.base import ToolParser

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_NAME = re.compile(r"[^\s<>{}\[\]\"']+")
_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


class Glm47ToolParser(ToolParser):
    """GLM-4.7 chat template (``'<tool_call>' + tc.name``, then the pairs, no newlines)::

        <tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>

    GLM-4.5/4.6 put a newline after the name and around each pair. Values are
    strings verbatim, other types as JSON (``tojson``); they are typed back with
    the tool's schema. A call without arguments is ``<tool_call>name</tool_call>``.
    """

    name = "glm47"
    markers = (OPEN,)

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        return tag_end(text, OPEN, CLOSE, final, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        body = tag_body(region, OPEN, CLOSE)
        head, sep, rest = body.partition("<arg_key>")
        name = head.strip()
        if not _NAME.fullmatch(name):
            return None
        args, pos, rest = {}, 0, sep + rest
        while rest[pos:].strip():
            pair = _PAIR.match(rest, pos)
            if pair is None:
                return None
            key = pair.group(1).strip()
            args[key] = coerce(pair.group(2), prop_schema(self._schemas, name, key))
            pos = pair.end()
        return [(name, args)]
