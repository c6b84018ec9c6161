"""Behaviour shared by every family: end_reasoning(), state, result types."""

from __future__ import annotations

import dataclasses
import random

import pytest

from tests.parsers.reasoning.streaming import (
    assert_well_formed,
    joined,
    random_chunkings,
    stream,
)
from vllm_mlx.parsers.reasoning.base import ReasoningDelta, ReasoningParser, ReasoningResult
from vllm_mlx.parsers.reasoning.deepseek_r1 import DeepSeekR1ReasoningParser
from vllm_mlx.parsers.reasoning.qwen3 import Qwen3ReasoningParser

R1_PROMPT = "<｜User｜>What is 17 × 23?<｜Assistant｜><think>\n"
R1_OUTPUT = "Step one. Step two.\n</think>\n\nAnswer: 42."
QWEN3_OUTPUT = "<think>\nStep one. Step two.\n</think>\n\nAnswer: 42."


def _forced(
    parser_cls: type[ReasoningParser], prompt: str | None, before: list[str], after: list[str]
) -> tuple[ReasoningResult, list[ReasoningDelta]]:
    """Stream before, call end_reasoning(), stream after."""
    deltas = stream(parser_cls(prompt), [*before, *after], end_after=len(before) - 1)
    return joined(deltas), deltas


def test_end_reasoning_mid_block_sends_the_rest_to_content() -> None:
    result, deltas = _forced(DeepSeekR1ReasoningParser, R1_PROMPT, ["Step one."], [R1_OUTPUT[9:]])
    # The model's own </think> is dropped; the whitespace around it is kept.
    assert result == ReasoningResult("Step one.", "Step two.\n\n\nAnswer: 42.")
    assert_well_formed(deltas)


def test_end_reasoning_right_before_the_close_tag_acts_like_a_close() -> None:
    before, after = ["Step one. Step two.\n"], ["</think>\n\nAnswer: 42."]
    result, _ = _forced(DeepSeekR1ReasoningParser, R1_PROMPT, before, after)
    assert result == ReasoningResult("Step one. Step two.", "Answer: 42.")


def test_end_reasoning_with_a_close_tag_half_received() -> None:
    before, after = ["Step one.\n</th"], ["ink>\n\nAnswer: 42."]
    result, deltas = _forced(DeepSeekR1ReasoningParser, R1_PROMPT, before, after)
    assert result == ReasoningResult("Step one.", "Answer: 42.")
    assert_well_formed(deltas)


def test_end_reasoning_before_any_output() -> None:
    parser = DeepSeekR1ReasoningParser(R1_PROMPT)
    assert parser.in_reasoning
    deltas = stream(parser, list(R1_OUTPUT), end_after=-1)
    assert not parser.in_reasoning
    assert joined(deltas) == ReasoningResult(None, "Step one. Step two.\n\n\nAnswer: 42.")


def test_end_reasoning_before_qwen3_opens_its_block() -> None:
    deltas = stream(Qwen3ReasoningParser(), list(QWEN3_OUTPUT), end_after=-1)
    assert joined(deltas) == ReasoningResult(None, "Step one. Step two.\n\n\nAnswer: 42.")
    assert_well_formed(deltas)


def test_end_reasoning_before_output_without_a_block() -> None:
    deltas = stream(Qwen3ReasoningParser(), [" Just", " an answer."], end_after=-1)
    assert joined(deltas) == ReasoningResult(None, " Just an answer.")


def test_end_reasoning_when_output_stops_before_the_close_tag() -> None:
    result, _ = _forced(DeepSeekR1ReasoningParser, R1_PROMPT, ["Step one."], [" Step two.\n</thi"])
    assert result == ReasoningResult("Step one.", "Step two.\n</thi")


def test_only_the_first_close_tag_after_end_reasoning_is_dropped() -> None:
    result, _ = _forced(DeepSeekR1ReasoningParser, R1_PROMPT, ["a"], ["</think>b</think>c"])
    assert result == ReasoningResult("a", "b</think>c")


def test_end_reasoning_after_the_block_changes_nothing() -> None:
    before, after = [R1_OUTPUT[:30]], [R1_OUTPUT[30:]]
    result, _ = _forced(DeepSeekR1ReasoningParser, R1_PROMPT, before, after)
    assert result == DeepSeekR1ReasoningParser(R1_PROMPT).parse(R1_OUTPUT)


@pytest.mark.parametrize(
    ("parser_cls", "prompt", "output"),
    [(DeepSeekR1ReasoningParser, R1_PROMPT, R1_OUTPUT), (Qwen3ReasoningParser, None, QWEN3_OUTPUT)],
)
def test_end_reasoning_result_does_not_depend_on_chunking(
    parser_cls: type[ReasoningParser], prompt: str | None, output: str
) -> None:
    rng = random.Random(7)
    for cut in range(len(output) + 1):
        head, tail = output[:cut], output[cut:]
        reference, _ = _forced(parser_cls, prompt, [head], [tail])
        seed = rng.randrange(1 << 30)
        for before, after in zip(
            random_chunkings(head, seed, 5), random_chunkings(tail, seed + 1, 5), strict=True
        ):
            result, deltas = _forced(parser_cls, prompt, before or [""], after)
            assert result == reference, (before, after)
            assert_well_formed(deltas)


def test_parse_leaves_streaming_state_alone() -> None:
    parser = DeepSeekR1ReasoningParser(R1_PROMPT)
    first = parser.feed("Step one.")
    assert parser.parse("x</think>y") == ReasoningResult("x", "y")
    rest = [parser.feed(R1_OUTPUT[9:]), parser.finish()]
    assert joined([first, *rest]) == parser.parse(R1_OUTPUT)


def test_instances_do_not_share_state() -> None:
    a, b = DeepSeekR1ReasoningParser(R1_PROMPT), DeepSeekR1ReasoningParser(R1_PROMPT)
    a.feed("thinking</think>")
    assert not a.in_reasoning
    assert b.in_reasoning
    assert b.feed("more") == ReasoningDelta("more", "")


def test_held_text_is_released_only_when_settled() -> None:
    parser = DeepSeekR1ReasoningParser(R1_PROMPT)
    assert parser.feed("So 391.\n</") == ReasoningDelta("So 391.", "")
    assert parser.feed("b>") == ReasoningDelta("\n</b>", "")
    assert parser.feed("\n</think>\n") == ReasoningDelta("", "")
    assert parser.feed("\n391") == ReasoningDelta("", "391")
    assert parser.finish() == ReasoningDelta("", "")


def test_result_types_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ReasoningResult("r", "c").content = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ReasoningDelta("r", "c").reasoning = "x"  # type: ignore[misc]
    assert ReasoningDelta() == ReasoningDelta("", "")
