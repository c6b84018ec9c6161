"""Shared checks for tool-call parsers: one fixture, parsed whole and streamed every way.

Streaming is checked over every 1-cut and 2-cut split of the fixture, one character
at a time, and seeded random chunkings. Each run must reassemble to exactly the
non-streaming result (content, call names and argument text) and, for well-formed
fixtures, no content delta may contain call markup. Splits that share a first chunk
feed it once and fork the parser, which keeps the quadratic sweep affordable.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vllm_mlx.parsers.tools import StreamDelta, ToolParser

ID = re.compile(r"call_[0-9a-f]{24}")
# Every piece of call markup of every family: none may reach content in clean cases.
MARKUP = (
    "<tool_call>", "</tool_call>", "<|tool_call|>", "<TOOLCALL>", "</TOOLCALL>",
    "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>", "<|python_start|>",
    "<|python_end|>", "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>",
    "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>", "<|tool_calls_section_begin|>",
    "<|tool_call_section_begin|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>",
    "<|tool_call_end|>", "<|tool_calls_section_end|>", "<|tool_call_section_end|>",
    ">>>", "<function=", "</function>", "<parameter=", "<arg_key>", "<arg_value>",
)  # fmt: skip
LEAK = re.compile("|".join(map(re.escape, MARKUP)))
RANDOM_CHUNKINGS = 200  # per fixture

Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    name: str  # test id
    text: str  # the model output, exactly as the family's template writes it
    content: str  # expected content
    calls: tuple[Call, ...] = ()  # expected (name, arguments) in order
    tools: tuple[dict[str, Any], ...] | None = None  # OpenAI tool definitions
    clean: bool = True  # False where markup is expected verbatim in content (malformed)
    skip: frozenset[str] = field(default_factory=frozenset)  # parsers that read it differently


def tool(name: str, **types: str) -> dict[str, Any]:
    """An OpenAI tool definition whose parameters have the given JSON types."""
    props = {key: {"type": kind} for key, kind in types.items()}
    return {"type": "function", "function": {"name": name, "parameters": {"properties": props}}}


def check_parse(cls: type[ToolParser], case: Case) -> None:
    result = cls(case.tools).parse(case.text)
    assert result.content == case.content
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == list(case.calls)
    assert all(ID.fullmatch(c.id) for c in result.tool_calls)


def _fork(parser: ToolParser) -> ToolParser:
    """A parser in the same state. Its attributes are immutable values or flat dicts
    (auto's member parsers are stateless helpers that borrow the engine's memo)."""
    clone = object.__new__(type(parser))
    clone.__dict__ = {k: dict(v) if isinstance(v, dict) else v for k, v in vars(parser).items()}
    return clone


def _runs(
    cls: type[ToolParser], case: Case, two_cuts: bool, randoms: int
) -> Iterator[tuple[list[str], list[StreamDelta]]]:
    """(chunks, deltas) for every chunking; cuts sharing a first chunk share its feed."""
    text, n = case.text, len(case.text)
    rng = random.Random(f"{cls.name}/{case.name}")
    chunkings = [[text], list(text)]
    for _ in range(randoms):
        cuts = [0]
        while cuts[-1] < n:
            cuts.append(cuts[-1] + rng.choice((1, 1, 2, 3, 5, 8, 13)))
        chunkings.append([text[a:b] for a, b in itertools.pairwise(cuts)])
    for chunks in chunkings:
        parser = cls(case.tools)
        yield chunks, [parser.feed(c) for c in chunks] + [parser.finish()]
    for i in range(1, n):
        head = cls(case.tools)
        first = head.feed(text[:i])
        for j in range(i + 1, n + 1) if two_cuts else (n,):  # j == n: the 1-cut split
            parser = _fork(head)
            chunks = [text[:i], text[i:j], text[j:]]
            yield chunks, [first, parser.feed(chunks[1]), parser.feed(chunks[2]), parser.finish()]


def check_stream(
    cls: type[ToolParser], case: Case, two_cuts: bool = True, randoms: int = RANDOM_CHUNKINGS
) -> None:
    expected = cls(case.tools).parse(case.text)
    want_calls = [(c.name, c.arguments) for c in expected.tool_calls]
    for chunks, deltas in _runs(cls, case, two_cuts, randoms):
        content: list[str] = []
        calls: dict[int, list[str]] = {}
        for delta in deltas:
            content.append(delta.content)
            if case.clean and delta.content:
                assert not LEAK.search(delta.content), (chunks, delta.content)
            for tc in delta.tool_calls:
                if tc.index in calls:
                    assert tc.id is None and tc.name is None, chunks
                    calls[tc.index][1] += tc.arguments
                else:
                    assert tc.id is not None and ID.fullmatch(tc.id) and tc.name, chunks
                    calls[tc.index] = [tc.name, tc.arguments]
        assert "".join(content) == expected.content, chunks
        assert sorted(calls) == list(range(len(calls))), chunks
        assert [tuple(calls[i]) for i in range(len(calls))] == want_calls, chunks
