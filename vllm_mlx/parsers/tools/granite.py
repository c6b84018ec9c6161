"""IBM Granite tool calls: 3.x (``<|tool_call|>`` + JSON list) and 4.x (``<tool_call>``)."""

from __future__ import annotations

from vllm_mlx.parsers.tools._json import RawCall, calls_from_json
from vllm_mlx.parsers.tools._scan import bracket_end, json_tag_end, skip_ws, tag_body
from vllm_mlx.parsers.tools.base import ToolParser

TOKEN = "<|tool_call|>"
OPEN, CLOSE = "<tool_call>", "</tool_call>"


class GraniteToolParser(ToolParser):
    """Granite 3.x: the ``<|tool_call|>`` token, then a JSON list::

        <|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]

    Granite 4.x (its chat template asks for Hermes-style tags)::

        <tool_call>
        {"name": "get_weather", "arguments": {"city": "Paris"}}
        </tool_call>
    """

    name = "granite"
    markers = (TOKEN, OPEN)

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        if marker == OPEN:
            return json_tag_end(text, OPEN, CLOSE, final, self._memo)
        start = skip_ws(text, len(TOKEN))
        if start == len(text):
            return None
        if text[start] not in "[{":
            return len(TOKEN)  # not followed by JSON: the token alone, verbatim
        return bracket_end(text, start, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        if marker == OPEN:
            return calls_from_json(tag_body(region, OPEN, CLOSE))
        return calls_from_json(region[len(TOKEN) :])
