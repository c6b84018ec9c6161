"""Hermes 2 Pro / Hermes 3 (NousResearch) tool calls."""

from __future__ import annotations

from vllm_mlx.parsers.tools._json import RawCall, calls_from_json
from vllm_mlx.parsers.tools._scan import json_tag_end, tag_body
from vllm_mlx.parsers.tools.base import ToolParser

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class HermesToolParser(ToolParser):
    """One JSON object per ``<tool_call>`` tag (Hermes-2-Pro chat template)::

        I'll check.
        <tool_call>
        {"arguments": {"city": "Paris"}, "name": "get_weather"}
        </tool_call>

    Keys may come in either order; ``arguments`` may also be a JSON string. A
    missing ``</tool_call>`` at the end of the output is tolerated.
    """

    name = "hermes"
    markers = (OPEN,)

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        return json_tag_end(text, OPEN, CLOSE, final, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        return calls_from_json(tag_body(region, OPEN, CLOSE))
