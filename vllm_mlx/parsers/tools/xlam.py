"""Salesforce xLAM tool calls: a bare JSON list, also fenced or tagged."""

from __future__ import annotations

from vllm_mlx.parsers.tools._json import RawCall, calls_from_json, first_key_in
from vllm_mlx.parsers.tools._scan import bracket_end, json_tag_end, skip_ws, tag_body
from vllm_mlx.parsers.tools.base import ToolParser

FENCE, FENCE_END = "```json", "```"
TOKEN = "[TOOL_CALLS]"
OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL_KEYS = ("name", "arguments")


class XlamToolParser(ToolParser):
    """xLAM model cards: the reply is a JSON list of calls::

        [{"name": "get_weather", "arguments": {"city": "Paris"}}]

    Also accepted, as vLLM's xLAM parser does: the list in a fenced block
    (```` ```json [...] ``` ````), after ``[TOOL_CALLS]``, or in ``<tool_call>`` tags.
    A bare list counts only at the start of the output, must carry ``arguments``
    and, when tools are given, name one of them.
    """

    name = "xlam"
    markers = (FENCE, TOKEN, OPEN)
    leading = True

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        if marker == FENCE:
            return json_tag_end(text, FENCE, FENCE_END, final, self._memo)
        if marker == OPEN:
            return json_tag_end(text, OPEN, CLOSE, final, self._memo)
        start = skip_ws(text, len(marker))
        if start == len(text):
            return None
        if text[start] not in "[{":
            return len(marker)  # not a call: verbatim (0 for a leading region)
        call_like = first_key_in(text, _CALL_KEYS) if marker == "" else True
        if not call_like:
            return None if call_like is None else 0  # 0: a JSON answer, not a call
        return bracket_end(text, start, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        if marker == FENCE:
            return calls_from_json(tag_body(region, FENCE, FENCE_END))
        if marker == OPEN:
            return calls_from_json(tag_body(region, OPEN, CLOSE))
        return calls_from_json(region[len(marker) :], require_args=marker == "")
