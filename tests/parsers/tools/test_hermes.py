"""Hermes: ``<tool_call>`` + JSON object.

Source: NousResearch/Hermes-2-Pro-Llama-3-8B chat template (tool_use) and its
system prompt: ``<tool_call>\\n{"arguments": <args-dict>, "name": <function-name>}\\n</tool_call>``.
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream
from vllm_mlx.parsers.tools.hermes import HermesToolParser

PARIS = ("get_weather", {"city": "Paris"})
LIMA = ("get_weather", {"city": "Lima"})
PLAIN = 'If a < b, [1, 2] and {"a": 1} hold, <tool is fine.\n'

CASES = [
    Case(
        "single",
        '<tool_call>\n{"arguments": {"city": "Paris"}, "name": "get_weather"}\n</tool_call>',
        "",
        (PARIS,),
    ),
    Case(
        "multiple-text-around",
        'Both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call>\n<tool_call>{"name": "get_weather", "arguments": {"city": "Lima"}}'
        "</tool_call>\nDone.",
        "Both.\nDone.",
        (PARIS, LIMA),
    ),
    Case(
        "unclosed-at-end",  # stop strings can eat the closing tag
        'Sure.<tool_call>{"name": "get_time", "arguments": {}}',
        "Sure.",
        (("get_time", {}),),
    ),
    Case(
        "string-arguments",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        "",
        (PARIS,),
    ),
    Case(
        "closing-tag-inside-a-string",
        '<tool_call>{"name": "write", "arguments": {"text": "a </tool_call> b"}}</tool_call>',
        "",
        (("write", {"text": "a </tool_call> b"}),),
    ),
    Case("plain", PLAIN, PLAIN),
    Case(
        "malformed-json",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": }}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": }}\n</tool_call>',
        clean=False,
    ),
    Case(
        "truncated",
        'Let me look. <tool_call>\n{"name": "get_weather", "argu',
        'Let me look. <tool_call>\n{"name": "get_weather", "argu',
        clean=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(HermesToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(HermesToolParser, case)
