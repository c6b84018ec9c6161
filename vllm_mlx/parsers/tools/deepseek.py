"""DeepSeek V3 / R1 / V3.1 tool calls (full-width ``<｜tool▁…｜>`` tokens)."""

from __future__ import annotations

import re

from vllm_mlx.parsers.tools._json import RawCall, loads
from vllm_mlx.parsers.tools._scan import tag_body, tag_end
from vllm_mlx.parsers.tools.base import ToolParser

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
OPEN, SEP, CLOSE = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"
_FENCED = re.compile(r"\s*([^\n]+?)\s*\n\s*```(?:json)?\s*\n(.*?)\n?\s*```\s*", re.S)


class DeepSeekToolParser(ToolParser):
    """V3 / R1 (chat template: type, name, fenced JSON)::

        <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
        ```json
        {"city": "Paris"}
        ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

    V3.1 (chat template: name, then bare JSON)::

        <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>
    """  # noqa: E501 (the wire format, verbatim)

    name = "deepseek"
    markers = (OPEN,)
    sections = (CALLS_BEGIN,)
    closers = (CALLS_END,)

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        return tag_end(text, OPEN, CLOSE, final, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        head, sep, rest = tag_body(region, OPEN, CLOSE).partition(SEP)
        if not sep:
            return None
        if rest.lstrip().startswith("{"):  # V3.1
            name, args_text = head.strip(), rest
        else:  # V3 / R1: the type ("function") sits before the separator
            fenced = _FENCED.fullmatch(rest)
            if fenced is None:
                return None
            name, args_text = fenced.group(1), fenced.group(2)
        args = loads(args_text.strip())
        if not name or "\n" in name or not isinstance(args, dict):
            return None
        return [(name, args)]
