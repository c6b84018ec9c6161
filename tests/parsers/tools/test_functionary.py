"""Functionary: v3.1 ``<function=name>{…}</function>``; v3.2 ``>>>recipient\\n…``.

Sources: llama.cpp models/templates/meetkai-functionary-medium-v3.1.jinja
(``'<function=' + name + '>' + arguments + '</function>'``) and
meetkai-functionary-medium-v3.2.jinja (``'>>>all\\n' + content``,
``'>>>' + name + '\\n' + arguments``; the generation prompt ends with ``>>>``).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream
from vllm_mlx.parsers.tools.functionary import FunctionaryToolParser

PARIS = ("get_weather", {"city": "Paris"})
PLAIN = "Sure: 1 < 2, [x] and {y}; a >> b."
BAD = '<function=get_weather>{"city": }</function>'

CASES = [
    Case("v31-single", '<function=get_weather>{"city": "Paris"}</function>', "", (PARIS,)),
    Case(
        "v31-text-before",
        'Checking.<function=get_weather>{"city": "Paris"}</function>',
        "Checking.",
        (PARIS,),
    ),
    Case(
        "v32-first-bare", 'get_weather\n{"city": "Paris"}', "", (PARIS,), skip=frozenset({"auto"})
    ),
    Case(
        "v32-content-then-calls",
        'all\nLet me check.>>>get_weather\n{"city": "Paris"}>>>now\n{}',
        "Let me check.",
        (PARIS, ("now", {})),
        skip=frozenset({"auto"}),
    ),
    Case(
        "v32-python",
        "python\nprint(1 + 1)",
        "",
        (("python", {"code": "print(1 + 1)"}),),
        skip=frozenset({"auto"}),
    ),
    Case("v32-content-only", "all\nHello, 1 < 2.", "Hello, 1 < 2.", skip=frozenset({"auto"})),
    Case("plain", PLAIN, PLAIN),
    Case("malformed", BAD, BAD, clean=False),
    Case("repl-prompt", "Type >>> x = 1", "Type >>> x = 1", clean=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(FunctionaryToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(FunctionaryToolParser, case)
