"""The request shape current Claude Code sends: system entries in messages, adaptive
thinking, output_config.effort, context_management edits and a large max_tokens."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.api.test_anthropic_adapter import FakeTokenizer, body, gen, make_ctx
from vllm_mlx.api.anthropic import adapter
from vllm_mlx.api.anthropic.context_edits import CLEARED
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.config import AgentConfig

REASONING = AgentConfig(reasoning_parser="qwen3")
NOTE = {"role": "system", "content": "Today's date is 2026-12-06."}


def test_leading_system_entry_joins_the_system_prompt() -> None:
    out = adapter.template_messages(
        body(system="Be brief.", messages=[NOTE, {"role": "user", "content": "Hi"}])
    )
    assert out == [
        {"role": "system", "content": "Be brief.\n\nToday's date is 2026-12-06."},
        {"role": "user", "content": "Hi"},
    ]


def test_later_system_entries_join_the_system_prompt_in_order() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": [{"type": "text", "text": "cwd: /work"}]},
        {"role": "assistant", "content": "Hello"},
        NOTE,
        {"role": "user", "content": "And?"},
    ]
    out = adapter.template_messages(body(system="S", messages=messages))
    assert out[0] == {"role": "system", "content": f"S\n\ncwd: /work\n\n{NOTE['content']}"}
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]


def test_billing_header_block_is_not_part_of_the_prompt() -> None:
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328.b7f;"},
        {"type": "text", "text": "You are terse."},
    ]
    out = adapter.template_messages(body(system=system))
    assert out[0] == {"role": "system", "content": "You are terse."}


def test_system_entry_must_be_text() -> None:
    bad = {"role": "system", "content": [{"type": "image", "source": {}}]}
    with pytest.raises(InvalidRequest):
        adapter.template_messages(body(messages=[{"role": "user", "content": "Hi"}, bad]))


# -- thinking and effort ----------------------------------------------------------


def _kwargs(ctx: Any, **fields: Any) -> dict[str, Any]:
    adapter.prepare_messages(body(**fields), ctx)
    tokenizer: FakeTokenizer = ctx.tokenizer
    return tokenizer.kwargs[-1]


@pytest.mark.parametrize(
    ("thinking", "agent", "expected"),
    [
        ({"type": "adaptive"}, REASONING, {"enable_thinking": True}),
        ({"type": "enabled", "budget_tokens": 2048}, REASONING, {"enable_thinking": True}),
        ({"type": "disabled"}, REASONING, {"enable_thinking": False}),
        ({"type": "adaptive"}, AgentConfig(), {}),  # no parser: the template's default
        (None, REASONING, {}),
    ],
)
def test_thinking_switches_the_template(
    thinking: dict[str, Any] | None, agent: AgentConfig, expected: dict[str, Any]
) -> None:
    assert _kwargs(make_ctx(agent=agent), thinking=thinking) == expected


@pytest.mark.parametrize(
    ("fields", "budget"),
    [
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, 1024),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, 16384),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, None),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, 2000),
        ({"output_config": {"effort": "medium"}}, 4096),
        ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, None),
    ],
)
def test_effort_and_budget_become_the_thinking_budget(
    fields: dict[str, Any], budget: int | None
) -> None:
    assert adapter.thinking_plan(body(**fields), make_ctx(agent=REASONING)).budget == budget


def test_request_budget_routes_thinking_overflow_into_content() -> None:
    ctx = make_ctx(agent=REASONING)
    fields = {"thinking": {"type": "enabled", "budget_tokens": 2}}
    processor = adapter.prepare_messages(body(**fields), ctx).output()
    processor.feed("<think>", 1)
    processor.feed("a b", 2)
    late = processor.feed(" c d", 2)
    assert late.content  # past the budget, text is the answer


def test_unknown_effort_is_rejected() -> None:
    with pytest.raises(ValidationError):
        body(output_config={"effort": "extreme"})


def test_claude_code_max_tokens_is_fitted_to_the_window() -> None:
    request = gen({"max_tokens": 128_000}, make_ctx(context=8192))
    assert request.sampling.max_tokens == 8192 - len(request.prompt_token_ids)


# -- context_management -----------------------------------------------------------


def _tool_turns(n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(n):
        name = "Read" if i % 2 else "Bash"
        use = {"type": "tool_use", "id": f"t{i}", "name": name, "input": {"i": i}}
        result = {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"out {i}"}
        messages += [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]},
        ]
    return messages


def _rendered(**fields: Any) -> list[dict[str, Any]]:
    ctx = make_ctx()
    adapter.prepare_messages(body(**fields), ctx)
    tokenizer: FakeTokenizer = ctx.tokenizer  # type: ignore[assignment]
    return tokenizer.rendered[-1][0]


def _results(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "tool"]


def test_clear_tool_uses_keeps_the_last_ones_once_triggered() -> None:
    edit = {
        "type": "clear_tool_uses_20250919",
        "trigger": {"type": "input_tokens", "value": 10},
        "keep": {"type": "tool_uses", "value": 2},
    }
    out = _rendered(messages=_tool_turns(5), context_management={"edits": [edit]})
    assert _results(out) == [CLEARED, CLEARED, CLEARED, "out 3", "out 4"]


def test_clear_tool_uses_waits_for_its_trigger_and_honours_options() -> None:
    quiet = {"type": "clear_tool_uses_20250919"}  # default trigger: 100,000 tokens
    out = _rendered(messages=_tool_turns(5), context_management={"edits": [quiet]})
    assert CLEARED not in _results(out)
    edit = {
        "type": "clear_tool_uses_20250919",
        "trigger": {"type": "tool_uses", "value": 1},
        "keep": {"type": "tool_uses", "value": 0},
        "exclude_tools": ["Read"],
        "clear_tool_inputs": True,
    }
    out = _rendered(messages=_tool_turns(4), context_management={"edits": [edit]})
    assert _results(out) == [CLEARED, "out 1", CLEARED, "out 3"]
    calls = [c for m in out for c in m.get("tool_calls") or ()]
    assert [c["function"]["arguments"] for c in calls] == [{}, {"i": 1}, {}, {"i": 3}]


def test_clear_thinking_is_accepted_and_thinking_is_never_replayed() -> None:
    edit = {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 1}}
    thought = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [thought, {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "Again"},
    ]
    out = _rendered(messages=messages, context_management={"edits": [edit]})
    assert out[1] == {"role": "assistant", "content": "Hello"}


@pytest.mark.parametrize(
    "edit",
    [
        {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": -1}},
        {"type": "clear_tool_uses_20250919", "keep": {"type": "thinking_turns", "value": 1}},
    ],
)
def test_bad_edit_settings_are_invalid(edit: dict[str, Any]) -> None:
    messages = _tool_turns(4)
    with pytest.raises(InvalidRequest) as info:
        adapter.prepare_messages(
            body(messages=messages, context_management={"edits": [edit]}), make_ctx()
        )
    assert info.value.param.startswith("context_management")


def test_unknown_edit_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        body(context_management={"edits": [{"type": "clear_everything"}]})
