"""Qwen3: outputs as the Qwen3 chat templates make the model write them.

Prompts follow the chat_template in Qwen/Qwen3-8B tokenizer_config.json: the
generation prompt is ``<|im_start|>assistant\\n``, and with enable_thinking=False
it adds ``<think>\\n\\n</think>\\n\\n``. Qwen/Qwen3-235B-A22B-Thinking-2507's
template ends the prompt with ``<think>\\n`` instead.
"""

from __future__ import annotations

import pytest

from tests.parsers.reasoning.streaming import Case, check_case, joined, stream
from vllm_mlx.parsers.reasoning.qwen3 import Qwen3ReasoningParser

PROMPT = "<|im_start|>user\nWhat is 17 × 23?<|im_end|>\n<|im_start|>assistant\n"
NO_THINK_PROMPT = PROMPT + "<think>\n\n</think>\n\n"
THINKING_2507_PROMPT = PROMPT + "<think>\n"

THINKING = "The user asks for 17 × 23.\n17 × 20 = 340, 17 × 3 = 51.\nSo 391."
ANSWER = "17 × 23 = **391**."

CASES = [
    Case("thinking", PROMPT, f"<think>\n{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER),
    Case(
        "thinking-no-prompt", None, f"<think>\n{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER
    ),
    Case("template-disabled", NO_THINK_PROMPT, ANSWER, None, ANSWER),
    Case("no-tags", None, "Hello! How can I help?", None, "Hello! How can I help?"),
    Case("no-tags-leading-space", PROMPT, "\n  Hi <b>there</b>", None, "\n  Hi <b>there</b>"),
    Case("looks-like-tag", PROMPT, "<thinking>is not a tag", None, "<thinking>is not a tag"),
    Case("soft-no-think", PROMPT, "<think>\n\n</think>\n\nHello!", None, "Hello!"),
    Case(
        "truncated",
        PROMPT,
        "<think>\nLet me compute 17 × 20 = 340\n",
        "Let me compute 17 × 20 = 340",
        "",
    ),
    Case("truncated-in-close-tag", PROMPT, "<think>\nSo 391.\n</thi", "So 391.\n</thi", ""),
    Case("closed-nothing-after", PROMPT, f"<think>\n{THINKING}\n</think>\n\n", THINKING, ""),
    Case(
        "thinking-2507", THINKING_2507_PROMPT, f"{THINKING}\n</think>\n\n{ANSWER}", THINKING, ANSWER
    ),
    Case(
        "angle-brackets",
        PROMPT,
        "<think>\nIs a < b? Use </b> and <thin>.\n</think>\n\nYes: a < b <th",
        "Is a < b? Use </b> and <thin>.",
        "Yes: a < b <th",
    ),
    Case(
        "unicode",
        PROMPT,
        "<think>\n用户问的是 17×23。\n</think>\n\n答案是 391。",
        "用户问的是 17×23。",
        "答案是 391。",
    ),
    Case("empty", PROMPT, "", None, ""),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parse_and_every_chunking_agree(case: Case) -> None:
    check_case(Qwen3ReasoningParser, case)


def test_name() -> None:
    assert Qwen3ReasoningParser.name == "qwen3"


def test_in_reasoning_follows_the_tags() -> None:
    parser = Qwen3ReasoningParser(PROMPT)
    assert not parser.in_reasoning
    parser.feed("\n<thi")
    assert not parser.in_reasoning  # not decided yet
    parser.feed("nk>\nHmm")
    assert parser.in_reasoning
    parser.feed("</think>")
    assert not parser.in_reasoning


def test_prompt_opened_block_starts_in_reasoning() -> None:
    assert Qwen3ReasoningParser(THINKING_2507_PROMPT).in_reasoning
    assert not Qwen3ReasoningParser(NO_THINK_PROMPT).in_reasoning


def test_without_prompt_a_lone_close_tag_is_content() -> None:
    # Documented limit: without the prompt, a Thinking-2507 output looks like content.
    parser = Qwen3ReasoningParser()
    assert parser.parse("Hmm.</think>\n\n391").content == "Hmm.</think>\n\n391"


def test_close_tag_after_the_answer_starts_is_verbatim() -> None:
    output = "<think>\nx\n</think>\n\nClose with </think> and open with <think>."
    parser = Qwen3ReasoningParser(PROMPT)
    result = parser.parse(output)
    assert result.content == "Close with </think> and open with <think>."
    assert joined(stream(Qwen3ReasoningParser(PROMPT), list(output))) == result
