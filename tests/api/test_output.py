"""OutputProcessor with the real parsers: reasoning (qwen3), then tool calls (hermes).

The sample output is split into the tokens an engine would send. Every way of
grouping those tokens into deltas (2**14 chunkings), and every cut of the text at
one or two arbitrary characters, must give the same reasoning, content and calls
as the whole text fed at once.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence

import pytest

from vllm_mlx.api.output import (
    ForcedToolCall,
    OutputAccumulator,
    OutputProcessor,
    ToolMode,
    processor_factory,
)
from vllm_mlx.config import AgentConfig
from vllm_mlx.parsers.reasoning.registry import get_reasoning_parser
from vllm_mlx.parsers.tools.registry import get_tool_parser

HERMES = get_tool_parser("hermes")
QWEN3 = get_reasoning_parser("qwen3")
SPECIAL = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]

# One assistant turn, token by token (the way a Qwen3 model writes it).
TOKENS = (
    "<think>",
    "\n",
    "Weather",
    " asked",
    ".\n",
    "</think>",
    "\n\n",
    "Checking",
    ".",
    "\n",
    "<tool_call>",
    '\n{"name": "get_weather", ',
    '"arguments": {"city": "Paris"}}',
    "\n</tool_call>",
    "<|im_end|>",
)
EXPECTED = ("Weather asked.", "Checking.", [("get_weather", {"city": "Paris"})])


def processor(**kwargs: object) -> OutputProcessor:
    kwargs.setdefault("special_tokens", SPECIAL)
    return OutputProcessor(QWEN3(None), HERMES(TOOLS), **kwargs)  # type: ignore[arg-type]


def run(
    chunks: Sequence[str], proc: OutputProcessor | None = None, tokens_per_chunk: int = 1
) -> tuple[str | None, str, list[tuple[str, dict[str, object]]]]:
    """(reasoning, content, [(name, arguments)]) after feeding chunks and finishing."""
    proc = proc or processor()
    out = OutputAccumulator()
    for chunk in chunks:
        out.add(proc.feed(chunk, tokens_per_chunk))
    out.add(proc.finish())
    calls = [(c.name, json.loads(c.arguments)) for c in out.tool_calls()]
    return out.reasoning_text, out.content_text, calls


def groupings(tokens: Sequence[str]) -> Iterator[list[str]]:
    """Every way to merge neighbouring tokens into deltas (2**(n-1) of them)."""
    for mask in range(2 ** (len(tokens) - 1)):
        chunks, current = [], ""
        for i, token in enumerate(tokens):
            current += token
            if i == len(tokens) - 1 or mask >> i & 1:
                chunks.append(current)
                current = ""
        yield chunks


def test_whole_text_splits_reasoning_content_and_call() -> None:
    assert run(["".join(TOKENS)]) == EXPECTED


def test_token_by_token() -> None:
    assert run(TOKENS) == EXPECTED


def test_every_grouping_of_tokens_gives_the_same_result() -> None:
    failures = [chunks for chunks in groupings(TOKENS) if run(chunks) != EXPECTED]
    assert not failures, f"{len(failures)} chunkings differ, e.g. {failures[0]}"


def test_every_two_cut_split_of_the_text() -> None:
    # Character cuts anywhere, except inside a special token (always one token).
    text = "".join(TOKENS[:-1])
    bad = []
    for i, j in itertools.combinations(range(len(text) + 1), 2):
        if run([text[:i], text[i:j], text[j:]]) != EXPECTED:
            bad.append((i, j))
    assert not bad, f"{len(bad)} splits differ, e.g. {bad[0]}: {text[: bad[0][0]]!r}"


def test_streamed_deltas_never_leak_markup() -> None:
    proc = processor()
    deltas = [proc.feed(token, 1) for token in TOKENS] + [proc.finish()]
    for delta in deltas:
        for text in (delta.reasoning, delta.content):
            for markup in ("<think>", "</think>", "<tool_call>", "</tool_call>", "<|im_end|>"):
                assert markup not in text
    # Reasoning comes before content, content before the call.
    kinds = [
        kind
        for d in deltas
        for kind, present in (("r", d.reasoning), ("c", d.content), ("t", d.tool_calls))
        if present
    ]
    assert kinds == sorted(kinds, key="rct".index)
    assert proc.saw_tool_call


def test_call_ids_are_fresh_and_set_on_the_first_delta() -> None:
    ids = set()
    for _ in range(3):
        proc = processor()
        calls = [c for t in TOKENS for c in proc.feed(t, 1).tool_calls]
        calls += proc.finish().tool_calls
        assert calls[0].id and calls[0].id.startswith("call_")
        assert calls[0].name == "get_weather" and calls[0].index == 0
        ids.add(calls[0].id)
    assert len(ids) == 3


def test_two_calls_keep_their_order() -> None:
    text = (
        '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
    )
    proc = OutputProcessor(None, HERMES(None))
    for chunking in ([text], list(text)):
        reasoning, content, calls = run(chunking, OutputProcessor(None, HERMES(None)))
        assert (reasoning, content) == (None, "")
        assert calls == [("a", {"x": 1}), ("b", {})]
    assert not proc.saw_tool_call  # untouched instance


def test_without_parsers_text_is_content() -> None:
    text = '<think>x</think><tool_call>{"name": "a", "arguments": {}}</tool_call>'
    assert run([text], OutputProcessor()) == (None, text, [])


def test_unclosed_think_block_is_all_reasoning() -> None:
    tokens = ["<think>", "\n", "still", " thinking"]
    assert run(tokens) == ("still thinking", "", [])


def test_malformed_call_comes_back_as_content() -> None:
    text = "Sure.\n<tool_call>\n{not json}\n</tool_call>"
    reasoning, content, calls = run([text], OutputProcessor(None, HERMES(TOOLS)))
    assert calls == [] and reasoning is None
    assert "{not json}" in content


# -- max_thinking_tokens -----------------------------------------------------------

THINKING = ["<think>", "\n", "a", " b", " c", " d", " e", "\n", "</think>", "\n\n", "Done", "."]


@pytest.mark.parametrize(
    ("limit", "reasoning", "content"),
    [
        # Tokens inside the block count, from the one after <think> ("\n" is the first).
        (3, "a b", "c d e\n\n\nDone."),
        (5, "a b c d", "e\n\n\nDone."),
        (7, "a b c d e", "Done."),  # the block fits: a normal split
        (100, "a b c d e", "Done."),
    ],
)
def test_max_thinking_tokens_routes_overflow_to_content(
    limit: int, reasoning: str, content: str
) -> None:
    result = run(THINKING, processor(max_thinking_tokens=limit))
    assert result == (reasoning, content, [])
    # Nothing is lost, and the model's own close tag never reaches the client.
    assert "</think>" not in result[1]
    assert f"{result[0] or ''} {result[1]}".split() == ["a", "b", "c", "d", "e", "Done."]


def test_max_thinking_tokens_counts_tokens_not_deltas() -> None:
    # Deltas of several tokens (--stream-interval): a delta that would pass the
    # limit goes to content whole, so emitted reasoning never exceeds the limit.
    proc = processor(max_thinking_tokens=4)
    out = OutputAccumulator()
    for text, tokens in [("<think>", 1), ("\na b", 3), (" c d e", 3), ("</think>", 1), ("Ok", 1)]:
        out.add(proc.feed(text, tokens))
    out.add(proc.finish())
    assert (out.reasoning_text, out.content_text) == ("a b", "c d eOk")


def test_max_thinking_tokens_zero_thinking_budget() -> None:
    reasoning, content, _ = run(THINKING, processor(max_thinking_tokens=0))
    assert reasoning is None
    assert content.split() == ["a", "b", "c", "d", "e", "Done."]


# -- special tokens -----------------------------------------------------------------


def test_special_tokens_are_stripped_from_content_and_reasoning() -> None:
    chunks = [
        "<think>",
        "hm<|endoftext|>",
        "</think>",
        "Hello",
        "<|im_end|>",
        " world",
        "<|im_start|>",
    ]
    assert run(chunks) == ("hm", "Hello world", [])


def test_special_tokens_stripped_without_parsers() -> None:
    proc = OutputProcessor(special_tokens=["<|im_end|>", "<|im_end|>x", ""])
    assert proc.feed("a<|im_end|>xb<|im_end|>").content == "ab"
    assert proc.finish().empty


def test_ordinary_text_resembling_special_tokens_is_kept() -> None:
    proc = OutputProcessor(special_tokens=SPECIAL)
    assert proc.feed("<|im_end").content == "<|im_end"


# -- forced tool calls (constrained JSON) ---------------------------------------------

FORCED = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'


@pytest.mark.parametrize("step", [1, 3, 7, len(FORCED)])
def test_forced_call_becomes_one_call_at_the_end(step: int) -> None:
    proc = OutputProcessor(tools=ForcedToolCall(), special_tokens=SPECIAL)
    pieces = [FORCED[i : i + step] for i in range(0, len(FORCED), step)]
    for piece in pieces:
        assert proc.feed(piece, 1).empty  # nothing before the JSON is complete
    assert not proc.saw_tool_call
    final = proc.finish()
    assert final.content == "" and final.reasoning == ""
    (call,) = final.tool_calls
    assert (call.index, call.name) == (0, "get_weather")
    assert call.id and call.id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "c"}
    assert proc.saw_tool_call


def test_forced_call_without_arguments_gets_an_empty_object() -> None:
    proc = OutputProcessor(tools=ForcedToolCall())
    proc.feed('{"name": "ping"}')
    (call,) = proc.finish().tool_calls
    assert (call.name, call.arguments) == ("ping", "{}")


@pytest.mark.parametrize("cut", [1, 10, 25, len(FORCED) - 1])
def test_truncated_forced_json_falls_back_to_text(cut: int) -> None:
    proc = OutputProcessor(tools=ForcedToolCall())
    assert proc.feed(FORCED[:cut], cut).empty
    final = proc.finish()
    assert final.tool_calls == ()
    assert final.content == FORCED[:cut]
    assert not proc.saw_tool_call


def test_forced_json_of_the_wrong_shape_falls_back_to_text() -> None:
    for text in ('["get_weather"]', '{"arguments": {}}', "null"):
        proc = OutputProcessor(tools=ForcedToolCall())
        proc.feed(text)
        assert proc.finish().content == text


# -- processor_factory ----------------------------------------------------------------

AGENT = AgentConfig(
    enable_auto_tool_choice=True,
    tool_call_parser="hermes",
    reasoning_parser="qwen3",
    max_thinking_tokens=None,
)


def test_factory_auto_mode_uses_both_parsers() -> None:
    make = processor_factory(AGENT, SPECIAL, TOOLS, ToolMode.AUTO, "<|im_start|>assistant\n")
    assert run(TOKENS, make()) == EXPECTED


def test_factory_makes_fresh_processors() -> None:
    make = processor_factory(AGENT, SPECIAL, TOOLS, ToolMode.AUTO)
    first = make()
    first.feed("<think>\nhalf")
    assert make() is not first
    assert run(TOKENS, make()) == EXPECTED


def test_factory_none_mode_keeps_tool_markup_as_content() -> None:
    make = processor_factory(AGENT, SPECIAL, TOOLS, ToolMode.NONE)
    reasoning, content, calls = run(TOKENS, make())
    assert reasoning == "Weather asked." and calls == []
    assert content.startswith("Checking.") and "<tool_call>" in content


def test_factory_forced_mode_has_no_reasoning_parser() -> None:
    make = processor_factory(AGENT, SPECIAL, TOOLS, ToolMode.FORCED)
    assert run([FORCED], make()) == (None, "", [("get_weather", {"city": "Paris", "unit": "c"})])


def test_factory_reads_the_prompt_for_an_open_think_block() -> None:
    # A template that opens the block in the prompt: the output starts inside it.
    make = processor_factory(AGENT, SPECIAL, None, ToolMode.NONE, "assistant\n<think>\n")
    assert run(["plan", "</think>", "answer"], make()) == ("plan", "answer", [])


def test_factory_applies_max_thinking_tokens() -> None:
    agent = AgentConfig(reasoning_parser="qwen3", max_thinking_tokens=3)
    make = processor_factory(agent, SPECIAL)
    assert run(THINKING, make()) == ("a b", "c d e\n\n\nDone.", [])
