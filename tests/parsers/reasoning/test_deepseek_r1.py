"""DeepSeek-R1: outputs as the R1 chat templates make the model write them.

The chat_template in deepseek-ai/DeepSeek-R1 tokenizer_config.json (and the
R1-Distill models) ends the generation prompt with ``<｜Assistant｜><think>\\n``, so
the output carries only ``</think>``. DeepSeek-R1-0528 writes ``<think>`` itself
(SGLang's reasoning parser docs); the first R1 template ended at ``<｜Assistant｜>``.
"""

from __future__ import annotations

import pytest

from tests.parsers.reasoning.streaming import Case, check_case, joined, stream
from vllm_mlx.parsers.reasoning.base import ReasoningResult
from vllm_mlx.parsers.reasoning.deepseek_r1 import DeepSeekR1ReasoningParser

BARE_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 17 × 23?<｜Assistant｜>"
PROMPT = BARE_PROMPT + "<think>\n"
CLOSED_PROMPT = PROMPT + "</think>\n\n"  # a template with thinking switched off

THINKING = "Okay, so I need to multiply 17 by 23.\n17 × 20 = 340, 17 × 3 = 51.\n340 + 51 = 391."
ANSWER = "17 × 23 = **391**."

CASES = [
    Case("prompt-opened", PROMPT, f"{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER),
    Case("no-prompt", None, f"{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER),
    Case("bare-prompt", BARE_PROMPT, f"{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER),
    Case("opens-itself", None, f"<think>\n{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER),
    Case(
        "opens-itself-bare",
        BARE_PROMPT,
        f"<think>\n{THINKING}\n</think>\n\n{ANSWER}",
        THINKING,
        ANSWER,
    ),
    Case("opened-twice", PROMPT, f"\n<think>\n{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER),
    Case(
        "truncated", PROMPT, "Okay, so I need to multiply 17", "Okay, so I need to multiply 17", ""
    ),
    Case("truncated-at-lt", PROMPT, "Okay, 17 <", "Okay, 17 <", ""),
    Case("truncated-open-tag", PROMPT, "<thi", "<thi", ""),
    Case("no-answer-yet", PROMPT, f"{THINKING}\n</think>\n\n", THINKING, ""),
    Case("empty-thinking", PROMPT, "</think>\n\n391", None, "391"),
    Case("closed-prompt", CLOSED_PROMPT, ANSWER, None, ANSWER),
    Case("tagless-answer", PROMPT, "391", "391", ""),
    Case(
        "unicode", PROMPT, "嗯，17×23=391。\n</think>\n\n答案：391", "嗯，17×23=391。", "答案：391"
    ),
    Case("empty", PROMPT, "", None, ""),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parse_and_every_chunking_agree(case: Case) -> None:
    check_case(DeepSeekR1ReasoningParser, case)


def test_name() -> None:
    assert DeepSeekR1ReasoningParser.name == "deepseek_r1"


def test_starts_in_reasoning_unless_the_prompt_closed_the_block() -> None:
    assert DeepSeekR1ReasoningParser().in_reasoning
    assert DeepSeekR1ReasoningParser(PROMPT).in_reasoning
    assert DeepSeekR1ReasoningParser(BARE_PROMPT).in_reasoning
    assert not DeepSeekR1ReasoningParser(CLOSED_PROMPT).in_reasoning


def test_in_reasoning_ends_at_the_close_tag() -> None:
    parser = DeepSeekR1ReasoningParser(PROMPT)
    parser.feed("Okay.</thi")
    assert parser.in_reasoning
    parser.feed("nk>")
    assert not parser.in_reasoning


def test_only_one_extra_open_tag_is_skipped() -> None:
    output = "<think><think>x</think>y"
    parser = DeepSeekR1ReasoningParser(PROMPT)
    assert parser.parse(output) == ReasoningResult("<think>x", "y")
    assert joined(stream(DeepSeekR1ReasoningParser(PROMPT), list(output))) == parser.parse(output)
