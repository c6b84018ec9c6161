"""Mistral: ``[TOOL_CALLS]`` + JSON list (tokenizer v3) or ``name[ARGS]{...}`` (v11+).

Sources: mistralai/Mistral-7B-Instruct-v0.3 chat template (``[TOOL_CALLS] [`` +
``{"name": …, "arguments": …, "id": <9 alnum>}`` + ``]``); mistral-common v11+
encoding as emitted by Mistral-Small-3.2 / Devstral (``[TOOL_CALLS]name[ARGS]{…}``,
``[CALL_ID]`` for Magistral-style ids), cf. mlx-lm ``tool_parsers/mistral.py``.
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream
from vllm_mlx.parsers.tools.mistral import MistralToolParser

PARIS = ("get_weather", {"city": "Paris"})
PLAIN = 'Lists like [1, 2], tags like [INST] and {"a": [3]} stay; so does [TOOL_CALL'
TRUNCATED = 'Ok.[TOOL_CALLS]get_weather[ARGS]{"city": "Par'

CASES = [
    Case(
        "v3-single",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]',
        "",
        (PARIS,),
    ),
    Case(
        "v3-multiple-text-before",
        'On it.[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {}}]',
        "On it.",
        (PARIS, ("get_time", {})),
    ),
    Case("v11-single", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "", (PARIS,)),
    Case(
        "v11-multiple",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
        "",
        (PARIS, ("get_time", {})),
    ),
    Case(
        "v11-call-id-text-after",
        '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}\nThen I answer.',
        "\nThen I answer.",
        (PARIS,),
    ),
    Case("plain", PLAIN, PLAIN),
    Case(
        "malformed-header",
        "[TOOL_CALLS] is a token, {x}",
        "[TOOL_CALLS] is a token, {x}",
        clean=False,
    ),
    Case("truncated", TRUNCATED, TRUNCATED, clean=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(MistralToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(MistralToolParser, case)
