"""GLM: ``<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>``.

Sources: GLM-4.7-Flash chat template (``{{- '<tool_call>' + tc.name -}}`` then
``<arg_key>{{ k }}</arg_key><arg_value>{{ v | tojson if v is not string else v }}</arg_value>``,
no newlines); llama.cpp models/templates/GLM-4.6.jinja (4.5/4.6: a newline after the
name and after each tag, ``'\\n<tool_call>'`` after content).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream, tool
from vllm_mlx.parsers.tools.glm47 import Glm47ToolParser

TOOLS = (tool("get_weather", city="string", days="integer", zip="string", opts="object"),)
PLAIN = "<arg_value is not a tag; 1 < 2, [x], {y}"
BAD = "<tool_call>get_weather<arg_key>city</arg_key>Paris</tool_call>"

CASES = [
    Case(
        "glm47-typed",
        "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
        "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
        "",
        (("get_weather", {"city": "Paris", "days": 3}),),
        TOOLS,
    ),
    Case(
        "glm46-newlines-text-before",
        "Let me check.\n<tool_call>get_weather\n<arg_key>zip</arg_key>\n"
        "<arg_value>75001</arg_value>\n</tool_call>",
        "Let me check.",
        (("get_weather", {"zip": "75001"}),),
        TOOLS,
    ),
    Case(
        "multiple-json-value",
        '<tool_call>get_weather<arg_key>opts</arg_key><arg_value>{"unit": "C"}</arg_value>'
        "</tool_call><tool_call>now</tool_call>",
        "",
        (("get_weather", {"opts": {"unit": "C"}}), ("now", {})),
    ),
    Case("plain", PLAIN, PLAIN),
    Case("malformed", BAD, BAD, clean=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(Glm47ToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(Glm47ToolParser, case)


def test_untyped_values_read_as_json() -> None:
    text = "<tool_call>f<arg_key>n</arg_key><arg_value>007</arg_value></tool_call>"
    # without a schema "007" is not JSON, so it stays a string; with one it is typed
    assert Glm47ToolParser().parse(text).tool_calls[0].arguments == '{"n": "007"}'
    typed = Glm47ToolParser([tool("f", n="string")]).parse(text.replace("007", "7"))
    assert typed.tool_calls[0].arguments == '{"n": "7"}'
