"""Llama: bare JSON (3.1/3.3), ``<|python_tag|>`` JSON, pythonic lists (3.2/4).

Sources: Meta llama-models prompt format for Llama 3.1 ("JSON based tool calling":
``{"name": …, "parameters": …}``; ``<|python_tag|>`` prefix) and vLLM's
``llama3_json`` parser (``; `` between calls); Meta's Llama 4 prompt-format guide
("Zero shot function-calling": ``[get_weather(city="San Francisco", …), …]``).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream, tool
from vllm_mlx.parsers.tools.llama import LlamaToolParser

PARIS = ("get_weather", {"city": "Paris"})
TOOLS = (tool("get_weather", city="string"), tool("get_time"))
JSON_ANSWER = '{"name": "John", "parameters": {"age": 3}}'
NOT_LEADING = 'Here: {"name": "get_weather", "parameters": {"city": "Paris"}}'
PLAIN = '[Docs](https://x.y) say {"a": 1} and [1, 2] < 3.'
TRUNCATED = '{"name": "get_weather", "parameters": {"city": "Paris"}'

CASES = [
    Case("json", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", (PARIS,)),
    Case(
        "python-tag-multiple",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_time", "parameters": {}}',
        "",
        (PARIS, ("get_time", {})),
    ),
    Case(
        "pythonic-llama4",
        '[get_weather(city="San Francisco", metric="celsius"), get_time()]',
        "",
        (("get_weather", {"city": "San Francisco", "metric": "celsius"}), ("get_time", {})),
    ),
    Case(
        "python-start-text-around",
        "Sure.\n<|python_start|>[get_weather(city='Paris')]<|python_end|>\nDone.",
        "Sure.\nDone.",
        (PARIS,),
    ),
    Case("json-answer-not-a-tool", JSON_ANSWER, JSON_ANSWER, tools=TOOLS),
    Case("json-after-text-is-content", NOT_LEADING, NOT_LEADING),
    Case("plain", PLAIN, PLAIN),
    Case("truncated", TRUNCATED, TRUNCATED),
    Case(
        "malformed-pythonic",
        "<|python_start|>[get_weather(city=Paris)]<|python_end|>",
        "<|python_start|>[get_weather(city=Paris)]<|python_end|>",
        clean=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(LlamaToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(LlamaToolParser, case)
