"""OpenAI bodies → request specs → GenerationRequests (api/requests.py), and the window."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest, ModelNotFound
from vllm_mlx.api.generation import PreparedPrompt
from vllm_mlx.api.openai import adapter
from vllm_mlx.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from vllm_mlx.api.requests import generation_requests
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.tokenizer import TemplateError
from vllm_mlx.config import AgentConfig, EngineConfig, PolicyConfig, RepetitionPolicy
from vllm_mlx.engine.types import SamplingParams

VOCAB = 100
CONTEXT = 64


class FakeTokenizer:
    """One token per character (ord mod VOCAB); enough for the adapter."""

    vocab_size = VOCAB
    template_knows_tools = True

    def __init__(self) -> None:
        self.chats: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % VOCAB for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i + 32) for i in ids)

    special_tokens: tuple[str, ...] = ()

    def render_chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        if any(m["role"] == "tool" for m in messages) and messages[0]["role"] == "tool":
            raise TemplateError("conversation must not start with a tool message")
        self.chats.append((messages, kwargs))
        return "".join(m["content"] for m in messages)


def make_ctx(
    context: int = CONTEXT,
    policy: PolicyConfig | None = None,
    agent: AgentConfig | None = None,
    sampling: SamplingDefaults | None = None,
    **engine: Any,
) -> ServingContext:
    return ServingContext(
        engine=None,  # type: ignore[arg-type]  # the adapter never touches the engine
        tokenizer=FakeTokenizer(),  # type: ignore[arg-type]
        model_id="tiny",
        model_context_length=context,
        engine_config=EngineConfig(**engine),
        policy=policy or PolicyConfig(),
        agent=agent or AgentConfig(),
        model_sampling=sampling or SamplingDefaults(),
    )


def chat(**fields: Any) -> ChatCompletionRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatCompletionRequest.model_validate_json(json.dumps(fields))


def completion(**fields: Any) -> CompletionRequest:
    fields.setdefault("prompt", "hi")
    return CompletionRequest.model_validate_json(json.dumps(fields))


def params(
    body: Any = None, ctx: ServingContext | None = None, seed_offset: int = 0, logprobs: Any = None
) -> SamplingParams:
    """The sampling of sequence ``seed_offset`` (one per prompt), max_tokens 10."""
    ctx = ctx or make_ctx()
    spec = adapter.request_spec(body if body is not None else chat(), ctx, 10, logprobs)
    prepared = PreparedPrompt([[1]] * (seed_offset + 1))
    return generation_requests(ctx, "r", prepared, spec)[seed_offset].sampling


# -- sampling ------------------------------------------------------------------------


def test_plain_request_maps_to_neutral_params() -> None:
    assert params() == SamplingParams(max_tokens=10)


def test_all_fields_map() -> None:
    body = chat(
        temperature=0.3,
        top_p=0.8,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"7": 5.0},
        seed=3,
        stop=["a", "b"],
        ignore_eos=True,
    )
    assert params(body, logprobs=2) == SamplingParams(
        max_tokens=10,
        temperature=0.3,
        top_p=0.8,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias=((7, 5.0),),
        seed=3,
        stop=("a", "b"),
        ignore_eos=True,
        logprobs=True,
        top_logprobs=2,
    )


def test_server_defaults_apply_when_omitted() -> None:
    ctx = make_ctx(default_temperature=0.6, default_top_p=0.9)
    p = params(chat(), ctx)
    assert (p.temperature, p.top_p) == (0.6, 0.9)


def test_server_defaults_do_not_override_explicit_values() -> None:
    ctx = make_ctx(default_temperature=0.6, default_top_p=0.9)
    p = params(chat(temperature=0, top_p=1.0), ctx)
    assert (p.temperature, p.top_p) == (0.0, 1.0)
    assert p.greedy
    p = params(chat(temperature=1.5), ctx)
    assert (p.temperature, p.top_p) == (1.5, 0.9)


MODEL = SamplingDefaults(temperature=0.2, top_p=0.9, top_k=40)  # a generation_config.json


def test_model_defaults_apply_when_omitted() -> None:
    p = params(chat(), make_ctx(sampling=MODEL))
    assert (p.temperature, p.top_p, p.top_k) == (0.2, 0.9, 40)
    # A model that names only some values leaves OpenAI's for the rest.
    p = params(chat(), make_ctx(sampling=SamplingDefaults(temperature=0.6)))
    assert (p.temperature, p.top_p, p.top_k) == (0.6, 1.0, 0)


def test_server_defaults_win_over_the_models() -> None:
    ctx = make_ctx(sampling=MODEL, default_temperature=0.7)
    p = params(chat(), ctx)
    assert (p.temperature, p.top_p, p.top_k) == (0.7, 0.9, 40)
    ctx = make_ctx(sampling=MODEL, default_temperature=0.7, default_top_p=0.5)
    assert (params(chat(), ctx).temperature, params(chat(), ctx).top_p) == (0.7, 0.5)


def test_request_values_win_over_every_default() -> None:
    ctx = make_ctx(sampling=MODEL, default_temperature=0.7, default_top_p=0.5)
    p = params(chat(temperature=0, top_p=1.0, top_k=-1), ctx)
    assert (p.temperature, p.top_p, p.top_k) == (0.0, 1.0, 0)
    assert p.greedy


def test_chat_spec_prefers_max_completion_tokens() -> None:
    ctx = make_ctx()
    assert adapter.chat_spec(chat(max_tokens=5), ctx).max_tokens == 5
    assert adapter.chat_spec(chat(max_tokens=5, max_completion_tokens=7), ctx).max_tokens == 7
    assert adapter.completion_spec(completion(max_tokens=9), ctx).max_tokens == 9


@pytest.mark.parametrize(
    ("fields", "top"),
    [({}, None), ({"logprobs": True}, 0), ({"logprobs": True, "top_logprobs": 3}, 3)],
)
def test_chat_logprobs_setting(fields: dict[str, Any], top: int | None) -> None:
    assert adapter.chat_spec(chat(**fields), make_ctx()).top_logprobs == top


@pytest.mark.parametrize(("top_k", "expected"), [(None, 0), (-1, 0), (0, 0), (1, 1), (50, 50)])
def test_top_k(top_k: int | None, expected: int) -> None:
    assert params(chat(top_k=top_k)).top_k == expected


def test_seed_offset_per_choice() -> None:
    assert params(chat(seed=100), seed_offset=3).seed == 103
    assert params(chat(), seed_offset=3).seed is None


@pytest.mark.parametrize(
    ("logprobs", "flag", "top"), [(None, False, 0), (0, True, 0), (5, True, 5)]
)
def test_logprobs_setting(logprobs: int | None, flag: bool, top: int) -> None:
    p = params(logprobs=logprobs)
    assert (p.logprobs, p.top_logprobs) == (flag, top)


@pytest.mark.parametrize("key", ["-1", str(VOCAB), "100000"])
def test_logit_bias_outside_vocab_is_invalid(key: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        params(chat(logit_bias={key: 1.0}))
    assert info.value.param == "logit_bias"
    assert info.value.status == 400
    assert "outside the vocabulary" in info.value.message


def test_logit_bias_edge_of_vocab_is_valid() -> None:
    assert params(chat(logit_bias={"0": -1, str(VOCAB - 1): 1})).logit_bias == (
        (0, -1.0),
        (VOCAB - 1, 1.0),
    )


@pytest.mark.parametrize("key", ["--5", "²"])
def test_malformed_logit_bias_key_is_a_client_error(key: str) -> None:
    with pytest.raises((ValidationError, InvalidRequest)):
        params(chat(logit_bias={key: 1.0}))


# -- prompts ------------------------------------------------------------------------


def test_completion_prompt_string_is_encoded() -> None:
    assert adapter.completion_prompts(completion(prompt="ab"), make_ctx()) == [[97, 98]]
    assert adapter.completion_prompts(completion(prompt="hi"), make_ctx()) == [[4, 5]]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ([5, 6], [[5, 6]]),
        ([[5], [6, 7]], [[5], [6, 7]]),
        (["a", "b"], [[97], [98]]),
    ],
)
def test_completion_prompt_forms(prompt: Any, expected: list[list[int]]) -> None:
    assert adapter.completion_prompts(completion(prompt=prompt), make_ctx()) == expected


@pytest.mark.parametrize("prompt", ["", [], [[]], ["a", ""], [[1], []]])
def test_empty_completion_prompt_is_invalid(prompt: Any) -> None:
    with pytest.raises(InvalidRequest, match="must not be empty"):
        adapter.completion_prompts(completion(prompt=prompt), make_ctx())


@pytest.mark.parametrize("prompt", [[VOCAB], [-1], [[1, 2], [3, VOCAB + 7]]])
def test_completion_token_ids_outside_vocab(prompt: Any) -> None:
    with pytest.raises(InvalidRequest, match="outside the vocabulary") as info:
        adapter.completion_prompts(completion(prompt=prompt), make_ctx())
    assert info.value.param == "prompt"


def test_completion_unsupported_fields() -> None:
    with pytest.raises(InvalidRequest) as info:
        adapter.completion_prompts(completion(suffix="tail"), make_ctx())
    assert info.value.param == "suffix"
    with pytest.raises(InvalidRequest) as info:
        adapter.completion_prompts(completion(best_of=3, n=2), make_ctx())
    assert info.value.param == "best_of"
    same = adapter.completion_prompts(completion(best_of=2, n=2), make_ctx())
    assert same == [[4, 5]]  # "hi", one token per character (ord mod 100)


def test_template_messages() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
        ]
    )
    assert adapter.template_messages(body.messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
        # Templates get tool-call arguments as objects, not JSON text.
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{**call, "function": {"name": "f", "arguments": {}}}],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
    ]


def test_image_content_is_refused() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "data:x"}}]
    body = chat(messages=[{"role": "user", "content": parts}])
    with pytest.raises(InvalidRequest) as info:
        adapter.prepare_chat(body, make_ctx())
    assert info.value.code == "unsupported_modality"


def test_chat_prompt_passes_tools_and_template_kwargs() -> None:
    ctx = make_ctx(agent=AgentConfig(enable_auto_tool_choice=True, tool_call_parser="hermes"))
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = chat(tools=tools, chat_template_kwargs={"enable_thinking": False})
    assert adapter.prepare_chat(body, ctx).prompts == [[4, 5]]
    tokenizer: FakeTokenizer = ctx.tokenizer  # type: ignore[assignment]
    assert tokenizer.chats[-1][1] == {"tools": tools, "enable_thinking": False}
    adapter.prepare_chat(chat(tools=tools, tool_choice="none"), ctx)
    assert tokenizer.chats[-1][1] == {"tools": None}


@pytest.mark.parametrize("choice", [None, "auto"])
def test_tools_without_parser_render_and_stay_text(
    choice: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_ctx()  # no --enable-auto-tool-choice, no parser
    tools = [{"type": "function", "function": {"name": "f"}}]
    for _ in range(2):
        prepared = adapter.prepare_chat(chat(tools=tools, tool_choice=choice), ctx)
    tokenizer: FakeTokenizer = ctx.tokenizer  # type: ignore[assignment]
    assert tokenizer.chats[-1][1] == {"tools": tools}
    assert prepared.logits_processors == ()
    assert prepared.output()._tools is None  # no parser: calls stay content
    assert sum("tool-call parsing is off" in r.message for r in caplog.records) == 1


def test_template_error_is_invalid_request() -> None:
    body = chat(messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(InvalidRequest, match="must not start") as info:
        adapter.prepare_chat(body, make_ctx())
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        # No constraint builder in this context: structured output is unavailable.
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ],
)
def test_unavailable_chat_features_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        adapter.prepare_chat(chat(**fields), make_ctx())
    assert info.value.param == param


# -- generation_requests -----------------------------------------------------------


def test_n_sequences_per_prompt() -> None:
    ctx = make_ctx(policy=PolicyConfig(timeout_s=30.0))
    body = completion(prompt=[[1, 2, 3], [4] * 10], n=2, seed=7)
    before = time.monotonic()
    prepared = PreparedPrompt([[1, 2, 3], [4] * 10])
    requests = generation_requests(ctx, "req", prepared, adapter.completion_spec(body, ctx))
    assert [r.request_id for r in requests] == ["req-0", "req-1", "req-2", "req-3"]
    assert [r.prompt_token_ids for r in requests] == [(1, 2, 3)] * 2 + [(4,) * 10] * 2
    assert [r.sampling.seed for r in requests] == [7, 8, 9, 10]
    # The default budget is clamped to each prompt's room in the window.
    assert [r.sampling.max_tokens for r in requests] == [61, 61, 54, 54]
    assert len({r.deadline for r in requests}) == 1
    deadline = requests[0].deadline
    assert deadline is not None
    assert before + 30.0 <= deadline <= time.monotonic() + 30.0
    assert all(r.arrival_time >= before for r in requests)


def test_explicit_max_tokens_checked_per_prompt() -> None:
    body = completion(n=1)
    ctx = make_ctx()
    spec = adapter.request_spec(body, ctx, 54, 3)
    reqs = generation_requests(ctx, "r", PreparedPrompt([[1] * 10]), spec)
    assert reqs[0].sampling.max_tokens == 54
    assert reqs[0].sampling.top_logprobs == 3
    with pytest.raises(InvalidRequest):
        prepared = PreparedPrompt([[1] * 10, [1] * 11])
        generation_requests(ctx, "r", prepared, adapter.request_spec(body, ctx, 54, None))


# -- ServingContext ----------------------------------------------------------------


def test_default_max_tokens_is_clamped_to_room() -> None:
    assert make_ctx().resolve_max_tokens(None, 10) == CONTEXT - 10
    assert make_ctx(default_max_tokens=20).resolve_max_tokens(None, 10) == 20
    assert make_ctx().resolve_max_tokens(None, CONTEXT - 1) == 1


def test_explicit_max_tokens_that_fits() -> None:
    assert make_ctx().resolve_max_tokens(CONTEXT - 10, 10) == CONTEXT - 10
    assert make_ctx().resolve_max_tokens(1, 10) == 1


def test_explicit_max_tokens_too_large() -> None:
    with pytest.raises(InvalidRequest) as info:
        make_ctx().resolve_max_tokens(CONTEXT - 9, 10)
    err = info.value
    assert err.code == "context_length_exceeded"
    assert err.param == "max_tokens"
    assert err.status == 400
    assert f"maximum context length is {CONTEXT} tokens" in err.message
    assert f"You requested {CONTEXT + 1} tokens (10 in the prompt, {CONTEXT - 9}" in err.message


@pytest.mark.parametrize("requested", [None, 1])
def test_prompt_that_fills_the_window(requested: int | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        make_ctx().resolve_max_tokens(requested, CONTEXT)
    assert info.value.code == "context_length_exceeded"
    assert f"the prompt has {CONTEXT} tokens" in info.value.message


def test_effective_context_override() -> None:
    ctx = make_ctx(effective_context_tokens=32)
    assert ctx.context_length == 32
    assert ctx.resolve_max_tokens(None, 10) == 22
    with pytest.raises(InvalidRequest, match="maximum context length is 32"):
        ctx.resolve_max_tokens(23, 10)
    # An override larger than the model's window cannot extend it.
    assert make_ctx(effective_context_tokens=10_000).context_length == CONTEXT


def test_model_check() -> None:
    make_ctx().check_model("anything")  # lenient by default
    strict = make_ctx(policy=PolicyConfig(strict_model_id=True))
    strict.check_model("tiny")
    strict.check_model("default")
    with pytest.raises(ModelNotFound) as info:
        strict.check_model("gpt-4")
    assert info.value.status == 404
    assert "tiny" in info.value.message and "'gpt-4'" in info.value.message


def test_generation_requests_carry_the_repetition_mode() -> None:
    prepared, body = PreparedPrompt([[1] * 4]), completion(n=2)
    ctx = make_ctx(policy=PolicyConfig(repetition_policy=RepetitionPolicy.OFF))
    server = generation_requests(ctx, "r", prepared, adapter.request_spec(body, ctx, 8, None))
    assert {r.repetition_policy for r in server} == {RepetitionPolicy.OFF}
    spec = adapter.request_spec(body, ctx, 8, None, RepetitionPolicy.STRICT)
    chosen = generation_requests(ctx, "r", prepared, spec)
    assert {r.repetition_policy for r in chosen} == {RepetitionPolicy.STRICT}
