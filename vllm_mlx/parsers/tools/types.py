"""What tool-call parsers return: whole results and streaming deltas."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    id: str  # "call_" + 24 hex chars, fresh per call
    name: str  # function name as the model wrote it
    arguments: str  # JSON object text (json.dumps of the parsed arguments)


@dataclass(frozen=True)
class ToolParseResult:
    content: str  # the output with all call markup removed
    tool_calls: tuple[ToolCall, ...]  # in output order


@dataclass(frozen=True)
class ToolCallDelta:
    index: int  # position of the call in the response (0-based)
    id: str | None  # set on a call's first delta only
    name: str | None  # set on a call's first delta only
    arguments: str  # a fragment of the arguments JSON text (may be "")


@dataclass(frozen=True)
class StreamDelta:
    content: str  # content released by this step ("" if none)
    tool_calls: tuple[ToolCallDelta, ...]  # calls completed by this step
