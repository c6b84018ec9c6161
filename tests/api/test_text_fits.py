"""Texts that cannot fit the window are refused before they are tokenized."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny_models import SPECIAL_TOKENS
from vllm_mlx.api.anthropic import adapter as anthropic
from vllm_mlx.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.openai import adapter as openai
from vllm_mlx.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.config import EngineConfig, PolicyConfig

WINDOW = 100
LONGEST = 4  # characters of the fake vocabulary's longest token


class NoEncodeTokenizer:
    """Renders messages as their joined contents; encoding a too-long text is a bug."""

    vocab_size = 1000
    template_knows_tools = True
    special_tokens: tuple[str, ...] = ()

    def render_chat(self, messages: list[dict[str, Any]], **_: Any) -> str:
        return "".join(str(m["content"]) for m in messages)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if len(text) >= WINDOW * LONGEST:
            raise AssertionError("a text that cannot fit was tokenized")
        return [ord(c) % self.vocab_size for c in text]


def make_ctx(longest: int | None = LONGEST) -> ServingContext:
    return ServingContext(
        engine=None,  # type: ignore[arg-type]  # nothing here reaches the engine
        tokenizer=NoEncodeTokenizer(),  # type: ignore[arg-type]
        model_id="tiny",
        model_context_length=WINDOW,
        engine_config=EngineConfig(),
        policy=PolicyConfig(),
        longest_token_chars=longest,
    )


def refusal(call: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        call()
    assert info.value.code == "context_length_exceeded"
    assert info.value.status == 400
    return info.value


def test_the_bound_refuses_at_the_window() -> None:
    ctx = make_ctx()
    ctx.check_text_fits("x" * (WINDOW - 1) * LONGEST)  # at least 99 tokens: may fit
    error = refusal(lambda: ctx.check_text_fits("x" * ((WINDOW - 1) * LONGEST + 1)))
    assert error.param == "messages"
    assert error.message == (
        f"This model's maximum context length is {WINDOW} tokens, "
        f"but the prompt has at least {WINDOW} tokens."
    )


def test_the_param_is_named_and_an_unknown_vocabulary_skips_the_check() -> None:
    assert refusal(lambda: make_ctx().check_text_fits("x" * 10**6, "prompt")).param == "prompt"
    make_ctx(longest=None).check_text_fits("x" * 10**6)


HUGE = "x" * (WINDOW * LONGEST)


def test_chat_is_refused_before_tokenizing() -> None:
    body = ChatCompletionRequest.model_validate_json(
        json.dumps({"model": "m", "messages": [{"role": "user", "content": HUGE}]})
    )
    error = refusal(lambda: openai.prepare_chat(body, make_ctx()))
    assert "at least 100 tokens" in error.message


def test_completions_are_refused_before_tokenizing() -> None:
    for prompt in (HUGE, ["short", HUGE]):
        body = CompletionRequest.model_validate_json(json.dumps({"model": "m", "prompt": prompt}))
        assert refusal(lambda b=body: openai.completion_prompts(b, make_ctx())).param == "prompt"


def test_messages_and_count_tokens_are_refused_before_tokenizing() -> None:
    fields = {"model": "m", "messages": [{"role": "user", "content": HUGE}]}
    body = MessagesRequest.model_validate_json(json.dumps({**fields, "max_tokens": 1}))
    refusal(lambda: anthropic.prepare_messages(body, make_ctx()))
    count = CountTokensRequest.model_validate_json(json.dumps(fields))
    refusal(lambda: anthropic.count_tokens(count, make_ctx()))


def test_short_texts_are_still_tokenized() -> None:
    body = CountTokensRequest.model_validate_json(
        json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    )
    assert anthropic.count_tokens(body, make_ctx()) == 5


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_llama_path: Path) -> Tokenizer:
    from mlx_lm.tokenizer_utils import load as load_tokenizer  # as the server loads it

    return Tokenizer(load_tokenizer(tiny_llama_path), frozenset())


def test_the_longest_token_is_measured_on_the_vocabulary(tiny_tokenizer: Tokenizer) -> None:
    assert tiny_tokenizer.longest_token_chars == max(map(len, SPECIAL_TOKENS)) == 13


@pytest.mark.parametrize(
    "text",
    [
        "the quick brown fox " * 50,
        "<|endoftext|>" * 40,  # one token per 13 characters: the bound is exact
        "日本語のテキストと emoji 🎉🎉 mixed in" * 20,
        "   \n\t" * 100,
    ],
)
def test_the_bound_never_exceeds_the_true_count(tiny_tokenizer: Tokenizer, text: str) -> None:
    longest = tiny_tokenizer.longest_token_chars
    assert longest is not None
    assert len(tiny_tokenizer.encode(text, add_special_tokens=False)) * longest >= len(text)
