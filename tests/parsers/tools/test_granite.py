"""Granite: ``<|tool_call|>`` + JSON list (3.x) or ``<tool_call>`` tags (4.x).

Sources: ibm-granite/granite-3.x-instruct chat template and llama.cpp's Granite
handler (``<|tool_call|>[{"name": …, "arguments": {…}}]``); ibm-granite/granite-4.0
chat template (``<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}``
``\\n</tool_call>``).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream
from vllm_mlx.parsers.tools.granite import GraniteToolParser

PARIS = ("get_weather", {"city": "Paris"})
PLAIN = "<|tool|> is not <|tool_call, and [1] {2} stay."

CASES = [
    Case(
        "g3-single",
        '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        "",
        (PARIS,),
    ),
    Case(
        "g3-multiple-text-before",
        'Sure.<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {}}]',
        "Sure.",
        (PARIS, ("get_time", {})),
    ),
    Case(
        "g4-text-around",
        'Ok.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call>\nBye.",
        "Ok.\nBye.",
        (PARIS,),
    ),
    Case("plain", PLAIN, PLAIN),
    Case("malformed", "<|tool_call|>[{]", "<|tool_call|>[{]", clean=False),
    Case("token-then-text", "<|tool_call|> none", "<|tool_call|> none", clean=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(GraniteToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(GraniteToolParser, case)
