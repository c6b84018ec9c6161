"""The shared engine: whitespace, held markers, ids, argument checks, instance state."""

import pytest

from vllm_mlx.parsers.tools import StreamDelta, ToolCallDelta
from vllm_mlx.parsers.tools._scan import Markers
from vllm_mlx.parsers.tools.hermes import HermesToolParser
from vllm_mlx.parsers.tools.kimi import KimiToolParser

CALL = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'


def test_whitespace_touching_calls_is_dropped_other_text_is_kept() -> None:
    parse = HermesToolParser().parse
    assert parse(f"A\n\n{CALL}\n\nB\n").content == "A\n\nB\n"
    assert parse(f"  A {CALL}  \n").content == "  A"
    assert parse(f"\n{CALL}\n{CALL}\n").content == ""
    assert parse("  plain  \n").content == "  plain  \n"


def test_partial_marker_is_held_until_settled() -> None:
    parser = HermesToolParser()
    assert parser.feed("a <tool") == StreamDelta("a", ())
    assert parser.feed("s") == StreamDelta(" <tools", ())
    assert parser.feed(" <tool_c") == StreamDelta("", ())
    assert parser.finish() == StreamDelta(" <tool_c", ())


def test_a_call_is_one_delta_with_id_and_name() -> None:
    parser = HermesToolParser()
    assert parser.feed(CALL[:-1]).tool_calls == ()
    step = parser.feed(CALL[-1:] + CALL)  # closes the first call, then a whole second one
    assert [(d.index, d.name, d.arguments) for d in step.tool_calls] == [
        (0, "f", "{}"),
        (1, "f", "{}"),
    ]
    assert all(isinstance(d, ToolCallDelta) and d.id for d in step.tool_calls)
    assert parser.finish() == StreamDelta("", ())


def test_ids_are_fresh() -> None:
    calls = HermesToolParser().parse(CALL * 50).tool_calls
    assert len({c.id for c in calls}) == 50


def test_parse_leaves_the_instance_untouched() -> None:
    parser = HermesToolParser()
    parser.feed("Hi <tool_call>{")
    assert parser.parse("x").content == "x"
    assert parser.feed('"name": "f"}</tool_call>').tool_calls[0].name == "f"


@pytest.mark.parametrize(
    "args",
    ["[1]", '"text"', "NaN", '{"a": NaN}', '{"a": Infinity}', "{'a': 1}"],
)
def test_arguments_must_be_a_json_object(args: str) -> None:
    text = f'<tool_call>{{"name": "f", "arguments": {args}}}</tool_call>'
    result = HermesToolParser().parse(text)
    assert (result.content, result.tool_calls) == (text, ())


def test_section_tokens_are_dropped_even_without_calls() -> None:
    text = "A <|tool_calls_section_begin|> <|tool_calls_section_end|>"
    assert KimiToolParser().parse(text).content == "A"


def test_start_markers() -> None:
    assert HermesToolParser().start_markers == ("<tool_call>",)
    assert "<|tool_calls_section_begin|>" in KimiToolParser().start_markers


def test_markers_must_not_contain_each_other() -> None:
    with pytest.raises(ValueError, match="contained"):
        Markers(["<a>", "<a>b"])
