"""Anthropic Messages bodies → template messages, tools, tool modes, prompts and counts."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from vllm_mlx.api.anthropic import adapter
from vllm_mlx.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.output import ToolMode
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.tokenizer import TemplateError
from vllm_mlx.config import AgentConfig, EngineConfig, PolicyConfig, RepetitionPolicy

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
CLOCK = {"name": "clock", "input_schema": {"type": "object", "properties": {}}}


class FakeTokenizer:
    """Renders a conversation as JSON text and encodes one token per character."""

    vocab_size = 1000
    template_knows_tools = True
    special_tokens = ("<|im_end|>",)

    def __init__(self) -> None:
        self.rendered: list[tuple[list[dict[str, Any]], Any]] = []
        self.kwargs: list[dict[str, Any]] = []

    def render_chat(self, messages: list[dict[str, Any]], tools: Any = None, **kw: Any) -> str:
        if messages and messages[0]["role"] == "tool":
            raise TemplateError("conversation must not start with a tool message")
        self.rendered.append((messages, tools))
        self.kwargs.append(kw)
        return json.dumps({"messages": messages, "tools": tools}, sort_keys=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % self.vocab_size for c in text]


class FakeConstraints:
    """Records the forced-call grammars the adapter asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], str | None, str]] = []

    def tool_call(self, tools: Any, name: str | None, param: str) -> Any:
        self.calls.append((list(tools), name, param))
        return lambda: "constraint"


def make_ctx(
    agent: AgentConfig | None = None,
    constraints: FakeConstraints | None = None,
    context: int = 100_000,
    sampling: SamplingDefaults | None = None,
    **engine: Any,
) -> ServingContext:
    return ServingContext(
        engine=None,  # type: ignore[arg-type]  # the adapter never touches the engine
        tokenizer=FakeTokenizer(),  # type: ignore[arg-type]
        model_id="tiny",
        model_context_length=context,
        engine_config=EngineConfig(**engine),
        policy=PolicyConfig(),
        agent=agent or AgentConfig(),
        constraints=constraints,  # type: ignore[arg-type]
        model_sampling=sampling or SamplingDefaults(),
    )


def body(**fields: Any) -> MessagesRequest:
    fields.setdefault("model", "default")
    fields.setdefault("max_tokens", 32)
    fields.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return MessagesRequest.model_validate_json(json.dumps(fields))


def count_body(**fields: Any) -> CountTokensRequest:
    fields.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return CountTokensRequest.model_validate_json(json.dumps(fields))


# -- system -------------------------------------------------------------------------


def test_system_string() -> None:
    out = adapter.template_messages(body(system="Be brief."))
    assert out == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_system_block_list_is_joined() -> None:
    system = [
        {"type": "text", "text": "You are helpful.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be concise."},
    ]
    out = adapter.template_messages(body(system=system))
    assert out[0] == {"role": "system", "content": "You are helpful.\n\nBe concise."}


@pytest.mark.parametrize("system", [None, "", []])
def test_no_or_empty_system_adds_no_message(system: Any) -> None:
    assert [m["role"] for m in adapter.template_messages(body(system=system))] == ["user"]


def test_system_blocks_must_be_text() -> None:
    with pytest.raises(ValidationError):
        body(system=[{"type": "image", "source": {}}])


# -- turns --------------------------------------------------------------------------


def test_multi_turn_keeps_order_and_text() -> None:
    messages = [
        {"role": "user", "content": "My name is Alice."},
        {"role": "assistant", "content": "Nice to meet you, Alice!"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "What's "}, {"type": "text", "text": "my name?"}],
        },
    ]
    assert adapter.template_messages(body(messages=messages)) == [
        {"role": "user", "content": "My name is Alice."},
        {"role": "assistant", "content": "Nice to meet you, Alice!"},
        {"role": "user", "content": "What's \nmy name?"},
    ]


def tool_turns(result: Any, is_error: bool = False) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should call the tool.", "signature": "s"},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": result,
                    "is_error": is_error,
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


def test_tool_use_and_string_tool_result() -> None:
    out = adapter.template_messages(body(messages=tool_turns("Sunny, 22C"), tools=[WEATHER]))
    assert out == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",  # the earlier thinking is not replayed
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 22C"},
        {"role": "user", "content": "Thanks"},
    ]


def test_tool_result_block_content_is_joined() -> None:
    blocks = [{"type": "text", "text": "Sunny"}, {"type": "text", "text": ", 22C"}]
    out = adapter.template_messages(body(messages=tool_turns(blocks)))
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 22C"}


@pytest.mark.parametrize("result", ["no such city", [{"type": "text", "text": "no such city"}]])
def test_tool_result_error_is_marked(result: Any) -> None:
    out = adapter.template_messages(body(messages=tool_turns(result, is_error=True)))
    assert out[2]["content"] == "Error: no such city"


def test_tool_result_without_content() -> None:
    out = adapter.template_messages(body(messages=tool_turns(None)))
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": ""}


def test_several_tool_results_become_several_tool_messages() -> None:
    turn = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "1"},
            {"type": "tool_result", "tool_use_id": "b", "content": "2"},
        ],
    }
    out = adapter.template_messages(body(messages=[{"role": "user", "content": "go"}, turn]))
    assert out[1:] == [
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": "2"},
    ]


def test_assistant_cannot_hold_tool_results() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]},
    ]
    with pytest.raises(InvalidRequest) as info:
        adapter.template_messages(body(messages=messages))
    assert info.value.param == "messages"


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}


@pytest.mark.parametrize(
    "content",
    [
        [IMAGE],
        [{"type": "text", "text": "what is this?"}, IMAGE],
        [{"type": "document", "source": {"type": "text", "data": "x"}}],
        [{"type": "tool_result", "tool_use_id": "a", "content": [IMAGE]}],
    ],
)
def test_images_and_documents_are_invalid(content: list[Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        adapter.template_messages(body(messages=[{"role": "user", "content": content}]))
    assert info.value.param == "messages"
    assert info.value.status == 400
    assert "image" in info.value.message


def test_unknown_block_type_is_rejected_by_the_protocol() -> None:
    with pytest.raises(ValidationError):
        body(messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}])


# -- tools --------------------------------------------------------------------------


def test_tools_become_openai_functions() -> None:
    assert adapter.template_tools(body(tools=[WEATHER, CLOCK])) == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        },
        {
            "type": "function",
            "function": {
                "name": "clock",
                "description": "",
                "parameters": {"type": "object", "properties": {}},
            },
        },
    ]


def test_no_tools() -> None:
    assert adapter.template_tools(body()) is None
    assert adapter.template_tools(body(tools=[])) is None


def test_custom_tool_type_is_accepted_and_server_tools_are_refused() -> None:
    assert adapter.template_tools(body(tools=[{**CLOCK, "type": "custom"}]))
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    with pytest.raises(InvalidRequest) as info:
        adapter.template_tools(body(tools=[server_tool]))
    assert info.value.param == "tools"


# -- tool_choice ----------------------------------------------------------------------

AUTO_AGENT = AgentConfig(enable_auto_tool_choice=True, tool_call_parser="hermes")


@pytest.mark.parametrize(
    ("choice", "agent", "mode", "forced"),
    [
        (None, AUTO_AGENT, ToolMode.AUTO, None),
        ({"type": "auto"}, AUTO_AGENT, ToolMode.AUTO, None),
        # Without a parser, agents that always offer tools still get text answers.
        ({"type": "auto"}, AgentConfig(), ToolMode.NONE, None),
        (None, AgentConfig(), ToolMode.NONE, None),
        ({"type": "any"}, AgentConfig(), ToolMode.FORCED, None),
        ({"type": "tool", "name": "clock"}, AgentConfig(), ToolMode.FORCED, "clock"),
        ({"type": "none"}, AUTO_AGENT, ToolMode.NONE, None),
    ],
)
def test_tool_choice_modes(
    choice: Any, agent: AgentConfig, mode: ToolMode, forced: str | None
) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER, CLOCK]}
    if choice is not None:
        fields["tool_choice"] = choice
    constraints = FakeConstraints()
    ctx = make_ctx(agent, constraints)
    text, got_mode, got_forced = adapter.render_prompt(body(**fields), ctx)
    assert (got_mode, got_forced) == (mode, forced)
    prepared = adapter.prepare_messages(body(**fields), ctx)
    if mode is ToolMode.FORCED:
        (tools, name, param) = constraints.calls[-1]
        assert [t["function"]["name"] for t in tools] == ["get_weather", "clock"]
        assert (name, param) == (forced, "tool_choice")
        assert len(prepared.logits_processors) == 1
    else:
        assert constraints.calls == [] and prepared.logits_processors == ()
    # Only auto tool parsing needs special tokens (call markers) left in the text.
    assert prepared.skip_special_tokens is (mode is not ToolMode.AUTO)
    assert prepared.prompts == [ctx.tokenizer.encode(text, add_special_tokens=False)]


def test_tools_are_rendered_even_when_tool_choice_is_none() -> None:
    ctx = make_ctx()
    adapter.render_prompt(body(tools=[WEATHER], tool_choice={"type": "none"}), ctx)
    tokenizer: FakeTokenizer = ctx.tokenizer  # type: ignore[assignment]
    assert tokenizer.rendered[-1][1][0]["function"]["name"] == "get_weather"


def test_tool_choice_without_tools_forces_nothing() -> None:
    constraints = FakeConstraints()
    ctx = make_ctx(constraints=constraints)
    _, mode, _ = adapter.render_prompt(body(tool_choice={"type": "any"}), ctx)
    assert mode is ToolMode.NONE and constraints.calls == []


def test_tool_choice_naming_an_unknown_tool() -> None:
    with pytest.raises(InvalidRequest) as info:
        adapter.render_prompt(
            body(tools=[WEATHER], tool_choice={"type": "tool", "name": "x"}), make_ctx()
        )
    assert info.value.param == "tool_choice"
    with pytest.raises(InvalidRequest):
        adapter.render_prompt(body(tools=[WEATHER], tool_choice={"type": "tool"}), make_ctx())


def test_forced_tool_without_structured_output_is_invalid() -> None:
    fields = {"tools": [WEATHER], "tool_choice": {"type": "any"}}
    with pytest.raises(InvalidRequest) as info:
        adapter.prepare_messages(body(**fields), make_ctx(constraints=None))
    assert info.value.param == "tool_choice"


def test_unknown_tool_choice_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        body(tools=[WEATHER], tool_choice={"type": "required"})


def test_forced_output_is_parsed_as_one_call() -> None:
    fields = {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}}
    ctx = make_ctx(AgentConfig(reasoning_parser="qwen3"), FakeConstraints())
    proc = adapter.prepare_messages(body(**fields), ctx).output()
    proc.feed('{"name": "get_weather", "arguments": {"city": "Rome"}}', 12)
    (call,) = proc.finish().tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Rome"})


def test_template_error_is_invalid_request() -> None:
    # A conversation the template refuses (here: our fake's rule) is the caller's fault.
    messages = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]
    with pytest.raises(InvalidRequest, match="must not start") as info:
        adapter.render_prompt(body(messages=messages), make_ctx())
    assert info.value.param == "messages"


# -- sampling -----------------------------------------------------------------------


def gen(fields: dict[str, Any], ctx: ServingContext | None = None) -> Any:
    ctx = ctx or make_ctx()
    request = body(**fields)
    prepared = adapter.prepare_messages(request, ctx)
    return adapter.generation_request("req-1", prepared, request, ctx, 1.0)


def test_guide_defaults_apply_when_nothing_is_set() -> None:
    request = gen({})
    assert request.request_id == "req-1"
    s = request.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.stop) == (32, 0.7, 0.9, 0, ())


def test_server_defaults_override_guide_defaults() -> None:
    ctx = make_ctx(default_temperature=0.2, default_top_p=0.5)
    s = gen({}, ctx).sampling
    assert (s.temperature, s.top_p) == (0.2, 0.5)
    s = gen({"temperature": 0.0, "top_p": 1.0}, ctx).sampling
    assert (s.temperature, s.top_p) == (0.0, 1.0)


def test_model_defaults_come_before_the_guides() -> None:
    model = SamplingDefaults(temperature=0.2, top_p=0.8, top_k=40)
    s = gen({}, make_ctx(sampling=model)).sampling
    assert (s.temperature, s.top_p, s.top_k) == (0.2, 0.8, 40)
    s = gen({}, make_ctx(sampling=SamplingDefaults(temperature=0.2))).sampling
    assert (s.temperature, s.top_p, s.top_k) == (0.2, 0.9, 0)
    # The operator's flags, then the request, win over the model's values.
    s = gen({}, make_ctx(sampling=model, default_temperature=0.5)).sampling
    assert (s.temperature, s.top_p) == (0.5, 0.8)
    s = gen({"temperature": 1.0, "top_k": 3}, make_ctx(sampling=model)).sampling
    assert (s.temperature, s.top_p, s.top_k) == (1.0, 0.8, 3)


def test_request_fields_map() -> None:
    fields = {"temperature": 0.0, "top_p": 0.5, "top_k": 5, "stop_sequences": ["END", "\n\n"]}
    s = gen(fields).sampling
    assert (s.temperature, s.top_p, s.top_k, s.stop) == (0.0, 0.5, 5, ("END", "\n\n"))


def test_max_tokens_beyond_the_window_is_clamped() -> None:
    # Claude Code always asks for 32000; the budget fits the window instead of a 400.
    request = gen({"max_tokens": 10_000}, make_ctx(context=1000))
    assert request.sampling.max_tokens == 1000 - len(request.prompt_token_ids)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 0},
        {"temperature": 5},
        {"temperature": -0.1},
        {"top_p": 1.5},
        {"messages": []},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"stop_sequences": [""]},
        {"stop_sequences": [str(i) for i in range(17)]},
        {"max_tokens": "32"},
    ],
)
def test_protocol_rejects(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        body(**fields)


def test_missing_max_tokens_is_rejected() -> None:
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate(
            {"model": "x", "messages": [{"role": "user", "content": "x"}]}
        )


# -- count_tokens ---------------------------------------------------------------------


def test_count_tokens_is_the_rendered_prompt_length() -> None:
    ctx = make_ctx()
    request = count_body(system="Be brief.", tools=[WEATHER])
    text, _, _ = adapter.render_prompt(request, ctx)
    assert adapter.count_tokens(request, ctx) == len(text)


def test_count_tokens_matches_the_generation_prompt() -> None:
    ctx = make_ctx(AUTO_AGENT)
    fields: dict[str, Any] = {"system": "s", "messages": tool_turns("ok"), "tools": [WEATHER]}
    counted = adapter.count_tokens(count_body(**fields), ctx)
    assert counted == len(gen(fields, ctx).prompt_token_ids)


@pytest.mark.parametrize(
    "extra",
    [
        {"system": "You are a careful assistant."},
        {"tools": [WEATHER]},
        {"messages": tool_turns("Sunny, 22C")},
    ],
)
def test_count_tokens_grows_with_each_part(extra: dict[str, Any]) -> None:
    ctx = make_ctx()
    base = adapter.count_tokens(count_body(), ctx)
    assert adapter.count_tokens(count_body(**extra), ctx) > base


def test_count_tokens_with_forced_tool_choice_needs_no_constraints() -> None:
    request = count_body(tools=[WEATHER], tool_choice={"type": "any"})
    assert adapter.count_tokens(request, make_ctx(constraints=None)) > 0


# -- tool_use input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Paris"}', {"city": "Paris"}),
        ("", {}),
        ("[1, 2]", {"value": [1, 2]}),
        ('"x"', {"value": "x"}),
        ('{"city": "Par', {"_raw": '{"city": "Par'}),
    ],
)
def test_tool_input(arguments: str, expected: dict[str, Any]) -> None:
    assert adapter.tool_input(arguments) == expected


def test_messages_use_the_server_repetition_mode() -> None:
    assert gen({}).repetition_policy is RepetitionPolicy.SAFE
    ctx = replace(make_ctx(), policy=PolicyConfig(repetition_policy=RepetitionPolicy.STRICT))
    assert gen({"repetition_policy_override": "safe"}, ctx).repetition_policy is (
        RepetitionPolicy.STRICT
    )
