"""Auto: every family's fixtures must read the same through auto-detection.

The exhaustive 2-cut sweep runs on each fixture with its own family parser (same
region code); here each fixture gets every 1-cut split, one character at a time and
100 random chunkings, and the auto-only fixtures get the full sweep.
"""

import pytest

from tests.parsers.tools import (
    test_deepseek,
    test_functionary,
    test_glm47,
    test_granite,
    test_hermes,
    test_kimi,
    test_llama,
    test_mistral,
    test_nemotron,
    test_qwen,
    test_xlam,
)
from tests.parsers.tools.harness import RANDOM_CHUNKINGS, Case, check_parse, check_stream
from vllm_mlx.parsers.tools.auto import AutoToolParser

FAMILIES = (
    test_deepseek,
    test_functionary,
    test_glm47,
    test_granite,
    test_hermes,
    test_kimi,
    test_llama,
    test_mistral,
    test_nemotron,
    test_qwen,
    test_xlam,
)
OWN = {"mixed-families", "functionary-bare-is-content"}
CASES = [
    Case(
        f"{module.__name__.rsplit('_', 1)[-1]}-{c.name}",
        c.text,
        c.content,
        c.calls,
        c.tools,
        c.clean,
    )
    for module in FAMILIES
    for c in module.CASES
    if "auto" not in c.skip
] + [
    Case(
        "mixed-families",  # markers of different families in one reply
        'A<tool_call>{"name": "a", "arguments": {}}</tool_call>B[TOOL_CALLS]b[ARGS]{"x": 1}',
        "AB",
        (("a", {}), ("b", {"x": 1})),
    ),
    Case("functionary-bare-is-content", "get_weather\n{}", "get_weather\n{}"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(AutoToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    own = case.name in OWN
    check_stream(AutoToolParser, case, two_cuts=own, randoms=RANDOM_CHUNKINGS if own else 100)
