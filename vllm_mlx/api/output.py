"""Per-choice post-processing shared by every protocol: reasoning, then tool calls.

    token text ──► reasoning parser ──► reasoning text
                          │
                          └─ content ──► tool parser ──► content text, tool-call deltas

Protocol adapters render the resulting :class:`OutputDelta` values; nothing here
knows about HTTP or about a protocol's wire shapes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vllm_mlx.config import AgentConfig
from vllm_mlx.parsers.reasoning.base import ReasoningParser
from vllm_mlx.parsers.reasoning.registry import get_reasoning_parser
from vllm_mlx.parsers.tools.base import ToolCall, ToolCallDelta, ToolParser
from vllm_mlx.parsers.tools.registry import get_tool_parser

TOOLS_UNPARSED = (
    "a request offered tools, but tool-call parsing is off: the tools are shown to the model "
    "and its calls come back as plain content. Start the server with --enable-auto-tool-choice "
    "--tool-call-parser <family> to return them as tool calls."
)


class ToolMode(StrEnum):
    NONE = "none"  # no tool parsing (no tools, or tool_choice none)
    AUTO = "auto"  # the model may call tools; the family parser extracts them
    FORCED = "forced"  # a call is forced by constrained decoding


@dataclass(frozen=True)
class OutputDelta:
    reasoning: str = ""
    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.reasoning or self.content or self.tool_calls)


@dataclass
class OutputAccumulator:
    """Everything a choice produced, for non-streaming responses."""

    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    calls: dict[int, list[ToolCallDelta]] = field(default_factory=dict)

    def add(self, delta: OutputDelta) -> None:
        self.reasoning.append(delta.reasoning)
        self.content.append(delta.content)
        for call in delta.tool_calls:
            self.calls.setdefault(call.index, []).append(call)

    def tool_calls(self) -> list[ToolCall]:
        out = []
        for index in sorted(self.calls):
            parts = self.calls[index]
            head = next(p for p in parts if p.name is not None)
            call_id = next((p.id for p in parts if p.id), new_call_id())
            out.append(ToolCall(call_id, head.name or "", "".join(p.arguments for p in parts)))
        return out

    @property
    def reasoning_text(self) -> str | None:
        text = "".join(self.reasoning)
        return text or None

    @property
    def content_text(self) -> str:
        return "".join(self.content)


class ForcedToolCall:
    """Output constrained to ``{"name": ..., "arguments": {...}}`` becomes one call.

    Used for tool_choice required/named (OpenAI) and any/tool (Anthropic); the
    grammar guarantees the JSON, so the call is emitted when generation ends.
    """

    def __init__(self) -> None:
        self._text: list[str] = []

    def feed(self, text: str) -> tuple[str, tuple[ToolCallDelta, ...]]:
        self._text.append(text)
        return "", ()

    def finish(self) -> tuple[str, tuple[ToolCallDelta, ...]]:
        raw = "".join(self._text)
        try:
            call = json.loads(raw)
            name, arguments = str(call["name"]), call.get("arguments", {})
        except (ValueError, KeyError, TypeError):
            return raw, ()  # cut short (max_tokens): show what there is
        args = json.dumps(arguments, ensure_ascii=False)
        return "", (ToolCallDelta(0, new_call_id(), name, args),)


class OutputProcessor:
    """Routes one choice's text through the configured parsers."""

    def __init__(
        self,
        reasoning: ReasoningParser | None = None,
        tools: ToolParser | ForcedToolCall | None = None,
        max_thinking_tokens: int | None = None,
        special_tokens: Sequence[str] = (),
    ) -> None:
        self._reasoning = reasoning
        self._tools = tools
        self._max_thinking = max_thinking_tokens
        self._thinking_tokens = 0
        # Longest first, so a token that contains another is removed whole.
        self._special = sorted((s for s in special_tokens if s), key=len, reverse=True)
        self.saw_tool_call = False

    def feed(self, text: str, num_tokens: int = 0) -> OutputDelta:
        reasoning, content = text, ""
        if self._reasoning is not None:
            if self._reasoning.in_reasoning:
                self._count_thinking(num_tokens)
            split = self._reasoning.feed(text)
            reasoning, content = split.reasoning, split.content
        else:
            reasoning, content = "", text
        return self._after_reasoning(reasoning, content, final=False)

    def finish(self) -> OutputDelta:
        reasoning, content = "", ""
        if self._reasoning is not None:
            split = self._reasoning.finish()
            reasoning, content = split.reasoning, split.content
        return self._after_reasoning(reasoning, content, final=True)

    def _count_thinking(self, num_tokens: int) -> None:
        self._thinking_tokens += num_tokens
        if self._max_thinking is not None and self._thinking_tokens > self._max_thinking:
            assert self._reasoning is not None
            self._reasoning.end_reasoning()  # the overflow is content from here on

    def _after_reasoning(self, reasoning: str, content: str, final: bool) -> OutputDelta:
        calls: tuple[ToolCallDelta, ...] = ()
        if self._tools is not None:
            if isinstance(self._tools, ForcedToolCall):
                content, calls = self._tools.feed(content)
                if final:
                    content, calls = self._tools.finish()
            else:
                parsed = self._tools.feed(content)
                content, calls = parsed.content, parsed.tool_calls
                if final:
                    tail = self._tools.finish()
                    content, calls = content + tail.content, calls + tail.tool_calls
        self.saw_tool_call |= bool(calls)
        return OutputDelta(self._strip(reasoning), self._strip(content), calls)

    def _strip(self, text: str) -> str:
        for token in self._special:
            if token in text:
                text = text.replace(token, "")
        return text


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def processor_factory(
    agent: AgentConfig,
    special_tokens: Sequence[str],
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_mode: ToolMode = ToolMode.NONE,
    prompt_text: str | None = None,
    max_thinking_tokens: int | None = None,
) -> Callable[[], OutputProcessor]:
    """A fresh processor per choice, from the server's parser choices and the request.

    Constrained output (forced calls, JSON) is never reasoning: the grammar rules it out.
    The thinking budget is the request's ``max_thinking_tokens`` or the server's, the smaller.
    """
    budgets = (b for b in (max_thinking_tokens, agent.max_thinking_tokens) if b is not None)
    budget = min(budgets, default=None)
    reasoning_cls = None
    if agent.reasoning_parser and tool_mode is not ToolMode.FORCED:
        reasoning_cls = get_reasoning_parser(agent.reasoning_parser)
    tool_cls = None
    if tool_mode is ToolMode.AUTO and agent.tool_call_parser:
        tool_cls = get_tool_parser(agent.tool_call_parser)

    def make() -> OutputProcessor:
        parser: ToolParser | ForcedToolCall | None = None
        if tool_mode is ToolMode.FORCED:
            parser = ForcedToolCall()
        elif tool_cls is not None:
            parser = tool_cls(tools)
        reasoning = reasoning_cls(prompt_text) if reasoning_cls else None
        return OutputProcessor(reasoning, parser, budget, special_tokens)

    return make
