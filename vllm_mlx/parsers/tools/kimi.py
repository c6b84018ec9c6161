"""Moonshot Kimi K2 tool calls (``<|tool_call_begin|>`` tokens, ``functions.name:idx`` ids)."""

from __future__ import annotations

import re

from vllm_mlx.parsers.tools._json import RawCall, loads
from vllm_mlx.parsers.tools._scan import tag_body, tag_end
from vllm_mlx.parsers.tools.base import ToolParser

OPEN, ARGS, CLOSE = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
_CALL_ID = re.compile(r"\s*(?:functions\.)?(\S+?)(?::\d+)?\s*")


class KimiToolParser(ToolParser):
    """Kimi K2 chat template (``render_toolcalls``); the call id names the function::

        <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>

    Some checkpoints write the section tokens in the singular
    (``<|tool_call_section_begin|>``); both are accepted.
    """  # noqa: E501 (the wire format, verbatim)

    name = "kimi"
    markers = (OPEN,)
    sections = ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>")
    closers = ("<|tool_calls_section_end|>", "<|tool_call_section_end|>")

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        return tag_end(text, OPEN, CLOSE, final, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        call_id, sep, args_text = tag_body(region, OPEN, CLOSE).partition(ARGS)
        name = _CALL_ID.fullmatch(call_id)
        args = loads(args_text.strip())
        if not sep or name is None or not isinstance(args, dict):
            return None
        return [(name.group(1), args)]
