"""Kimi K2: ``<|tool_calls_section_begin|>`` + ``functions.name:idx`` calls.

Sources: llama.cpp models/templates/moonshotai-Kimi-K2-Thinking.jinja
(``render_toolcalls``: ``<|tool_call_begin|>`` + id + ``<|tool_call_argument_begin|>``
+ args + ``<|tool_call_end|>``); the singular section token as handled by vLLM's
``kimi_k2`` parser.
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream
from vllm_mlx.parsers.tools.kimi import KimiToolParser

SB, SE = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CB, ARG, CE = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
PARIS = ("get_weather", {"city": "Paris"})
PLAIN = "Use <|im_end|> or <|tool_call in docs; {x} [y]"
BAD = f"{CB}functions.get_weather:0{ARG}city=Paris{CE}"

CASES = [
    Case(
        "single", f'{SB}{CB}functions.get_weather:0{ARG}{{"city": "Paris"}}{CE}{SE}', "", (PARIS,)
    ),
    Case(
        "multiple-singular-section-text-before",
        f'Hi.<|tool_call_section_begin|>{CB}functions.get_weather:0{ARG}{{"city": "Paris"}}{CE}'
        f"{CB}now:1{ARG}{{}}{CE}<|tool_call_section_end|>",
        "Hi.",
        (PARIS, ("now", {})),
    ),
    Case("plain", PLAIN, PLAIN),
    Case("malformed", BAD, BAD, clean=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(KimiToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(KimiToolParser, case)
