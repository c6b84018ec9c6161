"""Qwen tool calls: Qwen2.5 / Qwen3 (JSON) and Qwen3-Coder / Qwen3.5 (XML)."""

from __future__ import annotations

from vllm_mlx.parsers.tools._args import json_or_xml_calls
from vllm_mlx.parsers.tools._json import RawCall
from vllm_mlx.parsers.tools._scan import json_tag_end, tag_body
from vllm_mlx.parsers.tools.base import ToolParser

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class QwenToolParser(ToolParser):
    """``<tool_call>`` holding JSON (Qwen2.5/Qwen3 chat template)::

        <tool_call>
        {"name": "get_weather", "arguments": {"city": "Paris"}}
        </tool_call>

    or XML parameters (Qwen3-Coder chat template); values are raw text, typed
    with the tool's JSON schema::

        <tool_call>
        <function=get_weather>
        <parameter=city>
        Paris
        </parameter>
        </function>
        </tool_call>
    """

    name = "qwen"
    markers = (OPEN,)

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        return json_tag_end(text, OPEN, CLOSE, final, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        return json_or_xml_calls(tag_body(region, OPEN, CLOSE), self._schemas)
