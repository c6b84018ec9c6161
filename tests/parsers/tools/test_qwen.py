"""Qwen: ``<tool_call>`` holding JSON (Qwen2.5/Qwen3) or XML parameters (Qwen3-Coder).

Sources: Qwen/Qwen3-8B chat template (``<tool_call>\\n{"name": <function-name>,
"arguments": <args-json-object>}\\n</tool_call>``); Qwen/Qwen3-Coder-30B-A3B-Instruct
chat template (``<function=…>`` / ``<parameter=…>`` blocks, one value per line).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream, tool
from vllm_mlx.parsers.tools.qwen import QwenToolParser

TOOLS = (tool("get_weather", city="string", days="integer", zip="string"),)
XML_ONE = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
)
XML_BAD = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>"
PLAIN = "x<y and [a] {b}: use <tool_calls> or <tool_call"

CASES = [
    Case(
        "json-single",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        (("get_weather", {"city": "Paris"}),),
    ),
    Case(
        "json-multiple-text-before",
        'Sure!\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        "Sure!",
        (("get_weather", {"city": "Paris"}), ("get_time", {})),
    ),
    Case(
        "xml-typed-text-around",
        "Checking.\n<tool_call>\n<function=get_weather>\n<parameter=zip>\n75001\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\nOne moment.",
        "Checking.\nOne moment.",
        (("get_weather", {"zip": "75001", "days": 3}),),
        TOOLS,
    ),
    Case("plain", PLAIN, PLAIN),
    Case("malformed-xml", XML_BAD, XML_BAD, clean=False),
    Case(
        "malformed-json",
        '<tool_call>{"name": "get_weather", "arguments": {city: 1}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {city: 1}}</tool_call>',
        clean=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(QwenToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(QwenToolParser, case)


def test_xml_without_tools_reads_values_as_json() -> None:
    calls = QwenToolParser().parse(XML_ONE).tool_calls
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris", "days": 3}')
    ]
