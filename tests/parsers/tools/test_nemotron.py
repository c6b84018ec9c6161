"""Nemotron: ``<TOOLCALL>[…]</TOOLCALL>`` (Nano v2, Llama-Nemotron) and Nemotron 3 XML.

Sources: llama.cpp models/templates/NVIDIA-Nemotron-Nano-v2.jinja (``<TOOLCALL>[`` +
``{"name": …, "arguments": …}`` joined by ``, `` + ``]</TOOLCALL>``; its system
prompt shows ``"arguments"`` as a string); Nemotron-3-Nano chat template
(Qwen3-Coder style ``<tool_call><function=…><parameter=…>``).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream, tool
from vllm_mlx.parsers.tools.nemotron import NemotronToolParser

PARIS = ("get_weather", {"city": "Paris"})
PLAIN = "<TOOL> and <toolcall> are not tags; [x] {y} < z"

CASES = [
    Case(
        "single",
        '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</TOOLCALL>',
        "",
        (PARIS,),
    ),
    Case(
        "multiple-string-args-text-before",
        'Ok.\n\n<TOOLCALL>[{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}, '
        '{"name": "get_time", "arguments": {}}]</TOOLCALL>',
        "Ok.",
        (PARIS, ("get_time", {})),
    ),
    Case(
        "nemotron3-xml",
        "<tool_call>\n<function=get_weather>\n<parameter=days>\n2\n</parameter>\n</function>\n"
        "</tool_call>",
        "",
        (("get_weather", {"days": 2}),),
        (tool("get_weather", days="integer"),),
    ),
    Case("plain", PLAIN, PLAIN),
    Case(
        "malformed",
        '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}]</TOOLCALL>',
        '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}]</TOOLCALL>',
        clean=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(NemotronToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(NemotronToolParser, case)
