"""NVIDIA Nemotron tool calls: ``<TOOLCALL>`` JSON lists and Nemotron 3 XML."""

from __future__ import annotations

from vllm_mlx.parsers.tools._args import json_or_xml_calls
from vllm_mlx.parsers.tools._json import RawCall
from vllm_mlx.parsers.tools._scan import json_tag_end, tag_body
from vllm_mlx.parsers.tools.base import ToolParser

CLOSERS = {"<TOOLCALL>": "</TOOLCALL>", "<tool_call>": "</tool_call>"}


class NemotronToolParser(ToolParser):
    """Nemotron Nano v2 / Llama-Nemotron (chat template, ``arguments`` may be a string)::

        <TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</TOOLCALL>

    Nemotron 3 (Qwen3-Coder style XML, values typed with the tool's schema)::

        <tool_call>
        <function=get_weather>
        <parameter=city>
        Paris
        </parameter>
        </function>
        </tool_call>
    """

    name = "nemotron"
    markers = tuple(CLOSERS)

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        return json_tag_end(text, marker, CLOSERS[marker], final, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        return json_or_xml_calls(tag_body(region, marker, CLOSERS[marker]), self._schemas)
