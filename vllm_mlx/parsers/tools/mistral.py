"""Mistral tool calls: the ``[TOOL_CALLS]`` token, JSON list (v3) or name + ``[ARGS]`` (v11+)."""

from __future__ import annotations

import re

from vllm_mlx.parsers.tools._json import RawCall, calls_from_json, loads
from vllm_mlx.parsers.tools._scan import bracket_end, find_from, skip_ws
from vllm_mlx.parsers.tools.base import ToolParser

TOKEN = "[TOOL_CALLS]"
_HEADER = re.compile(r"\s*([\w.\-]+)\s*(?:\[CALL_ID\]\s*[\w\-]*\s*)?(?:\[ARGS\])?\s*")
_HEADER_SO_FAR = re.compile(r"[\w.\-\s\[\]]*")


class MistralToolParser(ToolParser):
    """Tokenizer v3 (Mistral 7B v0.3, Nemo, Small 2409; mistral-common, chat template)::

        [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]

    Tokenizer v11+ (Mistral Small 3.2, Devstral, Magistral): one token per call,
    optionally with the call id (``[CALL_ID]``)::

        [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}
        [TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}

    The model's own ids are not kept: every call gets a fresh ``call_`` id.
    """

    name = "mistral"
    markers = (TOKEN,)

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        start = skip_ws(text, len(TOKEN))
        if start == len(text):
            return None
        if text[start] == "[":
            return bracket_end(text, start, self._memo)
        brace = find_from(text, "{", len(TOKEN), self._memo)
        if brace < 0:
            return None if _HEADER_SO_FAR.fullmatch(text, len(TOKEN)) else len(TOKEN)
        if not _HEADER.fullmatch(text, len(TOKEN), brace):
            return len(TOKEN)  # not a call header: the token alone, verbatim
        return bracket_end(text, brace, self._memo)

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        body = region[len(TOKEN) :]
        if body.lstrip().startswith("["):
            return calls_from_json(body)
        header = _HEADER.match(body)
        if header is None or not body[header.end() :].startswith("{"):
            return None
        args = loads(body[header.end() :])
        return [(header.group(1), args)] if isinstance(args, dict) else None
