"""xLAM: the reply is a JSON list of calls (also fenced, after ``[TOOL_CALLS]``, or tagged).

Sources: Salesforce xLAM model cards (output ``[{"name": …, "arguments": {…}}]``)
and vLLM's ``xlam`` parser (```` ```json ```` blocks, ``[TOOL_CALLS]``, ``<tool_call>``).
"""

import pytest

from tests.parsers.tools.harness import Case, check_parse, check_stream, tool
from vllm_mlx.parsers.tools.xlam import XlamToolParser

PARIS = ("get_weather", {"city": "Paris"})
ONE = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'
DATA = '[{"id": 1}, {"id": 2}]'
PLAIN = "Use ```python\nx = [1]\n``` or [a](b) {c}"

CASES = [
    Case("list", ONE, "", (PARIS,)),
    Case(
        "list-multiple",
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "now", "arguments": {}}]',
        "",
        (PARIS, ("now", {})),
        (tool("get_weather", city="string"), tool("now")),
    ),
    Case("fenced-text-around", f"Here:\n```json\n{ONE}\n```\nDone.", "Here:\nDone.", (PARIS,)),
    Case("tool-calls-token", f"[TOOL_CALLS]{ONE}", "", (PARIS,)),
    Case("tool-call-tag", f"<tool_call>{ONE}</tool_call>", "", (PARIS,)),
    Case("data-list-is-content", DATA, DATA),
    Case("plain", PLAIN, PLAIN),
    Case("truncated", ONE[:30], ONE[:30]),
    Case("malformed-fenced", "```json\n[{]\n```", "```json\n[{]\n```"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse(case: Case) -> None:
    check_parse(XlamToolParser, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stream(case: Case) -> None:
    check_stream(XlamToolParser, case)
