"""Responses bodies → conversations, tool modes, constraints, prompts and sampling."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.generation import PreparedPrompt
from vllm_mlx.api.openai.responses import adapter
from vllm_mlx.api.openai.responses.protocol import ResponsesRequest
from vllm_mlx.api.output import ToolMode
from vllm_mlx.config import AgentConfig, EngineConfig, PolicyConfig

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PARSING = AgentConfig(enable_auto_tool_choice=True, tool_call_parser="hermes")
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


class FakeTokenizer:
    """Renders a conversation as JSON text and encodes one token per character."""

    vocab_size = 1000
    template_knows_tools = True
    special_tokens = ("<|im_end|>",)

    def __init__(self) -> None:
        self.kwargs: list[dict[str, Any]] = []

    def render_chat(self, messages: list[dict[str, Any]], tools: Any = None, **kw: Any) -> str:
        self.kwargs.append(kw)
        return json.dumps({"messages": messages, "tools": tools}, sort_keys=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % self.vocab_size for c in text]


class FakeConstraints:
    """Records the grammars the adapter asks for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    def tool_call(self, tools: Any, name: str | None, param: str) -> Any:
        self.asked.append(("tool_call", name))
        return lambda: "tool_call"

    def json_schema(self, schema: Any, param: str) -> Any:
        self.asked.append(("json_schema", schema))
        return lambda: "json_schema"

    def json_object(self) -> Any:
        self.asked.append(("json_object", None))
        return lambda: "json_object"


def make_ctx(agent: AgentConfig | None = None, constraints: Any = None) -> ServingContext:
    return ServingContext(
        engine=None,  # type: ignore[arg-type]  # the adapter never touches the engine
        tokenizer=FakeTokenizer(),  # type: ignore[arg-type]
        model_id="tiny",
        model_context_length=100_000,
        engine_config=EngineConfig(),
        policy=PolicyConfig(),
        agent=agent or AgentConfig(),
        constraints=constraints,
    )


def body(**fields: Any) -> ResponsesRequest:
    fields.setdefault("input", "Hi")
    return ResponsesRequest.model_validate_json(json.dumps(fields))


def prepare(request: ResponsesRequest, ctx: ServingContext) -> PreparedPrompt:
    return adapter.prepare(request, adapter.conversation(request, ()), ctx)


def test_instructions_lead_and_history_follows() -> None:
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    convo = adapter.conversation(body(instructions="Be brief.", input="c"), history)
    assert convo.messages == [
        {"role": "system", "content": "Be brief."},
        *history,
        {"role": "user", "content": "c"},
    ]
    assert convo.new_messages == convo.messages[1:]  # the store keeps no instructions


def test_empty_input_and_background_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="at least one item"):
        adapter.conversation(body(input=[]), ())
    with pytest.raises(InvalidRequest, match="background"):
        adapter.conversation(body(background=True), ())


def test_tool_choice_none_hides_tools_but_still_checks_them() -> None:
    assert adapter.conversation(body(tools=[WEATHER], tool_choice="none"), ()).tools is None
    with pytest.raises(InvalidRequest, match="'web_search'"):
        adapter.conversation(body(tools=[{"type": "web_search"}], tool_choice="none"), ())


@pytest.mark.parametrize(
    ("fields", "agent", "expected"),
    [
        ({}, None, (ToolMode.NONE, None)),
        ({"tools": [WEATHER]}, None, (ToolMode.NONE, None)),  # no parser: calls stay text
        ({"tools": [WEATHER]}, PARSING, (ToolMode.AUTO, None)),
        ({"tools": [WEATHER], "tool_choice": "auto"}, PARSING, (ToolMode.AUTO, None)),
        ({"tools": [WEATHER], "tool_choice": "none"}, PARSING, (ToolMode.NONE, None)),
        ({"tools": [WEATHER], "tool_choice": "required"}, None, (ToolMode.FORCED, None)),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
            None,
            (ToolMode.FORCED, "get_weather"),
        ),
    ],
)
def test_tool_modes(fields: dict[str, Any], agent: AgentConfig | None, expected: Any) -> None:
    assert adapter.tool_mode(body(**fields), make_ctx(agent)) == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"tool_choice": "required"},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
        {"tools": [WEATHER], "tool_choice": {"type": "web_search"}},
        {"tool_choice": {"type": "function", "name": "get_weather"}},
    ],
)
def test_bad_tool_choice_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as err:
        adapter.tool_mode(body(**fields), make_ctx())
    assert err.value.param == "tool_choice"


def test_forced_call_is_constrained_and_wins_over_text_format() -> None:
    constraints = FakeConstraints()
    fmt = {"format": {"type": "json_schema", "name": "x", "schema": SCHEMA}}
    request = body(tools=[WEATHER], tool_choice="required", text=fmt)
    prepared = prepare(request, make_ctx(constraints=constraints))
    assert constraints.asked == [("tool_call", None)]
    assert len(prepared.logits_processors) == 1


@pytest.mark.parametrize(
    ("fmt", "asked"),
    [
        ({"type": "json_schema", "name": "x", "schema": SCHEMA, "strict": True}, "json_schema"),
        ({"type": "json_object"}, "json_object"),
        ({"type": "text"}, None),
    ],
)
def test_text_format_uses_the_grammar_engine(fmt: dict[str, Any], asked: str | None) -> None:
    constraints = FakeConstraints()
    prepare(body(text={"format": fmt}), make_ctx(constraints=constraints))
    assert [kind for kind, _ in constraints.asked] == ([asked] if asked else [])
    if asked == "json_schema":
        assert constraints.asked[0][1] == SCHEMA


def test_json_schema_needs_a_schema_and_a_grammar_engine() -> None:
    with pytest.raises(InvalidRequest) as err:
        prepare(
            body(text={"format": {"type": "json_schema", "name": "x"}}),
            make_ctx(None, FakeConstraints()),
        )
    assert err.value.param == "text.format"
    with pytest.raises(InvalidRequest, match="structured output"):
        prepare(body(text={"format": {"type": "json_object"}}), make_ctx())


@pytest.mark.parametrize(
    ("agent", "effort", "kwargs"),
    [
        (AgentConfig(), "low", {}),  # nothing separates thinking: the template decides
        (AgentConfig(reasoning_parser="qwen3"), "low", {"enable_thinking": True}),
        (AgentConfig(), "none", {"enable_thinking": False}),
    ],
)
def test_reasoning_effort(agent: AgentConfig, effort: str, kwargs: dict[str, Any]) -> None:
    ctx = make_ctx(agent)
    prepare(body(reasoning={"effort": effort}), ctx)
    assert ctx.tokenizer.kwargs == [kwargs]  # type: ignore[attr-defined]


def test_sampling_and_budget() -> None:
    ctx = make_ctx()
    request = body(temperature=0.0, top_p=0.5, max_output_tokens=7)
    gen = adapter.generation_request("r1", prepare(request, ctx), request, ctx, 1.0)
    assert (gen.request_id, gen.sampling.temperature, gen.sampling.top_p) == ("r1", 0.0, 0.5)
    assert gen.sampling.max_tokens == 7


def test_a_budget_beyond_the_window_is_fitted_to_it() -> None:
    ctx = make_ctx()
    request = body(max_output_tokens=10_000_000)
    prepared = prepare(request, ctx)
    gen = adapter.generation_request("r1", prepared, request, ctx, 1.0)
    assert gen.sampling.max_tokens == 100_000 - len(prepared.prompts[0])


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 3},
        {"max_output_tokens": 0},
        {"tool_choice": "sometimes"},
        {"text": {"format": {"type": "yaml"}}},
        {"metadata": {str(i): "v" for i in range(17)}},
        {"input": 5},
    ],
)
def test_bad_fields_fail_validation(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        body(**fields)


@pytest.mark.parametrize("fields", [{"background": 0}, {"stream": "yes"}, {"store": 1}])
def test_no_type_coercion(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        body(**fields)
