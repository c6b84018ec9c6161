"""DeepSeek: ``<｜tool▁calls▁begin｜>`` sections, V3/R1 fenced JSON or V3.1 bare JSON.

Sources: deepseek-ai/DeepSeek-V3 (and R1) chat template (``<｜tool▁call▁begin｜>`` +
type + ``<｜tool▁sep｜>`` + name + ``\\n```json\\n`` + args + ``\\n```<｜tool▁call▁end｜>``);
llama.cpp models/templates/deepseek-ai-DeepSeek-V3.1.jinja (name + ``<｜tool▁sep｜>`` + args).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream
from vllm_mlx.parsers.tools.deepseek import DeepSeekToolParser

B, E = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CB, SEP, CE = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"
PARIS = ("get_weather", {"city": "Paris"})
V3_PARIS = f'{CB}function{SEP}get_weather\n```json\n{{"city": "Paris"}}\n```{CE}'
PLAIN = "In math a<b; in DeepSeek docs <｜tool is a token prefix and ｜ a bar."
BAD = f'{CB}get_weather{SEP}{{"city": Paris}}{CE}'

CASES = [
    Case("v3-single", f"{B}{V3_PARIS}{E}", "", (PARIS,)),
    Case(
        "v3-multiple-text-before",
        f"Hi.{B}{V3_PARIS}\n{CB}function{SEP}now\n```json\n{{}}\n```{CE}{E}",
        "Hi.",
        (PARIS, ("now", {})),
    ),
    Case(
        "v31-multiple-text-after",
        f'{B}{CB}get_weather{SEP}{{"city": "Paris"}}{CE}{CB}now{SEP}{{}}{CE}{E}\nok',
        "\nok",
        (PARIS, ("now", {})),
    ),
    Case("plain", PLAIN, PLAIN),
    Case("malformed", BAD, BAD, clean=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(DeepSeekToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(DeepSeekToolParser, case)
