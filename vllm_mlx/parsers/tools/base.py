"""Tool-call parsing: the result types and the engine every family shares.

A family only describes its wire format: ``markers`` (texts that open a call region),
``sections``/``closers`` (standalone tokens around calls, dropped), ``leading`` (bare
JSON may open the output), ``region_end`` (where a region ends) and ``parse_region``
(its calls, or ``None`` when malformed: the region then comes back verbatim as content).
``parse`` and ``feed``/``finish`` run the same steps, so the result does not depend on
how the text was chunked::

    "Let me look.\n<tool_call>{...}</tool_call>\n"  ->  "Let me look." + one call
     └── content ──┘└──────── region ─────────┘

Content streams as it comes, except a tail that could still grow into a marker and
trailing whitespace (dropped where it touches call markup). A call is emitted whole, as
one delta, when its region closes and parses: a call that may still turn out malformed
is never announced, so streamed and non-streamed results always agree.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from vllm_mlx.parsers.tools._args import index_tools
from vllm_mlx.parsers.tools._json import RawCall
from vllm_mlx.parsers.tools._scan import Markers, Memo, markers_for
from vllm_mlx.parsers.tools.types import StreamDelta, ToolCall, ToolCallDelta, ToolParseResult

__all__ = ["StreamDelta", "ToolCall", "ToolCallDelta", "ToolParseResult", "ToolParser"]

_IDS = random.Random()  # private: unaffected by anyone seeding the global generator
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)  # arguments text


class ToolParser(ABC):
    """Extracts tool calls from one response; create a fresh instance per request."""

    name: ClassVar[str]
    markers: ClassVar[tuple[str, ...]] = ()  # texts that open a call region
    sections: ClassVar[tuple[str, ...]] = ()  # standalone tokens opening a call section
    closers: ClassVar[tuple[str, ...]] = ()  # standalone tokens closing a call section
    leading: ClassVar[bool] = False  # a markerless call may open the output
    _dropped: ClassVar[frozenset[str]]  # sections + closers (set per subclass)
    _scanner: ClassVar[Markers]  # finds any of the above (set per subclass)

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        self._tool_defs = tuple(tools or ())
        self._schemas = index_tools(self._tool_defs)  # tool name -> parameters schema
        self._memo: Memo = {}  # resumable scan state of the open region
        self._buf = ""  # text not yet released
        self._open: str | None = None  # marker of the region being read ("" = leading)
        self._gap = ""  # whitespace held back in front of the open region
        self._lead = self.leading  # still at the start of the output
        self._after_call = False  # no visible content since the last region
        self._count = 0  # calls emitted so far

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dropped = frozenset(cls.sections + cls.closers)
        cls._scanner = markers_for(cls.markers + cls.sections + cls.closers)

    @property
    def start_markers(self) -> tuple[str, ...]:
        """Texts whose appearance means tool-call markup starts (empty for bare JSON)."""
        return self.markers + self.sections

    @abstractmethod
    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        """End of the region opening at ``text[0]`` with ``marker``.

        ``None`` while undecided (more text needed); at the end of the stream
        (``final``) that makes the region malformed. For the leading region
        (``marker == ""``), 0 means "not a call, read it as content". The answer
        for a text must hold for every longer text (the engine relies on it).
        """

    @abstractmethod
    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        """``(name, arguments)`` of each call in ``region``, or ``None`` if malformed."""

    def parse(self, text: str) -> ToolParseResult:
        """Parse a whole response (uses a fresh instance; ``self`` is untouched)."""
        fresh = type(self)(self._tool_defs)
        head, tail = fresh.feed(text), fresh.finish()
        calls = (
            ToolCall(d.id or "", d.name or "", d.arguments)
            for d in head.tool_calls + tail.tool_calls
        )
        return ToolParseResult(head.content + tail.content, tuple(calls))

    def feed(self, text: str) -> StreamDelta:
        """Take the next piece of output; return what can be released now."""
        buf, self._buf = self._buf, ""  # sole reference: CPython appends in place,
        buf += text  # so a long held region is not copied on every feed
        self._buf = buf
        return self._drain(final=False)

    def finish(self) -> StreamDelta:
        """End of output: flush held text; an unfinished region comes back verbatim."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> StreamDelta:
        content: list[str] = []
        calls: list[ToolCallDelta] = []
        while True:
            if self._open is not None:
                progressed = self._read_region(final, content, calls)
            elif self._lead:
                progressed = self._try_leading(final)
            else:
                progressed = self._scan_content(final, content)
            if not progressed:
                return StreamDelta("".join(content), tuple(calls))

    def _try_leading(self, final: bool) -> bool:
        body = self._buf.lstrip()
        if not body:
            self._lead = not final
            return final
        self._gap, self._buf, self._open = self._buf[: len(self._buf) - len(body)], body, ""
        return True

    def _scan_content(self, final: bool, content: list[str]) -> bool:
        buf = self._buf
        pos, marker = self._scanner.find(buf)
        if marker is None:
            if final:
                if not (self._after_call and buf.isspace()):
                    self._emit(buf, content)
                self._buf = ""
                return False
            text = buf[:pos].rstrip()  # trailing whitespace may precede a region
            self._emit(text, content)
            self._buf = buf[len(text) :]
            return False
        text = buf[:pos].rstrip()
        self._emit(text, content)
        if marker in self._dropped:  # a standalone section token: just drop it
            self._buf, self._after_call, self._lead = buf[pos + len(marker) :], True, False
        else:
            self._gap, self._buf, self._open = buf[len(text) : pos], buf[pos:], marker
        return True

    def _read_region(self, final: bool, content: list[str], calls: list[ToolCallDelta]) -> bool:
        marker, text = self._open or "", self._buf
        end = self.region_end(marker, text, final)
        if end is None and not final:
            return False
        if end == 0:  # leading text that is no call after all: read it as content
            self._buf, self._gap = self._gap + text, ""
        else:
            found = None if end is None else self._calls(marker, text[:end])
            end = len(text) if end is None else end
            if found is None:
                self._emit(self._gap + text[:end], content)  # malformed: verbatim
            else:
                calls.extend(found)
                self._after_call = True
            self._buf, self._gap = text[end:], ""
        self._open, self._lead = None, False
        self._memo.clear()
        return True

    def _calls(self, marker: str, region: str) -> list[ToolCallDelta] | None:
        raw = self.parse_region(marker, region)
        if raw is None:
            return None
        deltas: list[ToolCallDelta] = []
        for name, args in raw:
            if not isinstance(name, str) or not name or not isinstance(args, dict):
                return None
            if marker == "" and self._schemas and name not in self._schemas:
                return None  # bare JSON must name a declared tool
            try:
                text = _ENCODER.encode(args)
            except (TypeError, ValueError):
                return None
            index = self._count + len(deltas)
            deltas.append(ToolCallDelta(index, f"call_{_IDS.getrandbits(96):024x}", name, text))
        self._count += len(deltas)
        return deltas

    def _emit(self, text: str, content: list[str]) -> None:
        if text:
            content.append(text)
            if not text.isspace():
                self._after_call = self._lead = False
