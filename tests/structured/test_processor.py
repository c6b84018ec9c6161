"""GrammarConstraint on the tiny tokenizer: masks, EOS, rejections, wider vocabularies."""

from __future__ import annotations

import json
import logging
from typing import Any

import jsonschema
import mlx.core as mx
import pytest

from tests.structured.schemas import PERSON_SCHEMA, TOOLS
from vllm_mlx.structured import (
    GrammarConstraint,
    compile_grammar,
    compile_json_object,
    compile_json_schema,
    constraint_factory,
    tool_call_schema,
)

MAX_STEPS = 400
NEG_INF = float("-inf")


def _allowed(logits: mx.array) -> set[int]:
    row = logits[0].tolist()
    return {i for i, v in enumerate(row) if v != NEG_INF}


def _random_walk(
    proc: Any, vocab: int, eos: tuple[int, ...], seed: int, bias: mx.array | None = None
) -> list[int]:
    """Sample from random logits under the constraint until EOS; return the tokens."""
    key = mx.random.key(seed)
    history: list[int] = []
    for _ in range(MAX_STEPS):
        key, k1, k2 = mx.random.split(key, 3)
        logits = mx.random.normal((1, vocab), key=k1) * 3.0
        if bias is not None:
            logits = logits + bias
        masked = proc(history, logits)
        token = int(mx.random.categorical(masked, key=k2).item())
        assert masked[0, token].item() != NEG_INF, "sampled a masked token"
        if token in eos:
            return history
        history.append(token)
    raise AssertionError(f"no EOS after {MAX_STEPS} steps: {history}")


@pytest.mark.parametrize("seed", range(12))
def test_random_logits_give_schema_valid_json(
    seed: int, tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer)
    factory = constraint_factory(compile_json_schema(PERSON_SCHEMA, tiny_info), vocab, tiny_eos)
    ids = _random_walk(factory(), vocab, tiny_eos, seed)
    jsonschema.validate(json.loads(tiny_tokenizer.decode(ids)), PERSON_SCHEMA)


@pytest.mark.parametrize("seed", range(6))
def test_random_logits_give_valid_tool_calls(
    seed: int, tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    schema = tool_call_schema(TOOLS, "required")
    vocab = len(tiny_tokenizer)
    factory = constraint_factory(compile_json_schema(schema, tiny_info), vocab, tiny_eos)
    call = json.loads(tiny_tokenizer.decode(_random_walk(factory(), vocab, tiny_eos, seed)))
    jsonschema.validate(call, schema)
    assert call["name"] in {"get_weather", "add"}


@pytest.mark.parametrize("seed", range(6))
def test_json_object_mode_gives_an_object(
    seed: int, tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer)
    factory = constraint_factory(compile_json_object(tiny_info), vocab, tiny_eos)
    # Any object is unbounded: favour closing tokens so that a random walk ends.
    closers = [any(c in tiny_tokenizer.decode([t]) for c in '"]}') for t in range(vocab)]
    bias = mx.array(closers, dtype=mx.float32) * 4.0
    text = tiny_tokenizer.decode(_random_walk(factory(), vocab, tiny_eos, seed, bias))
    assert isinstance(json.loads(text), dict)


def test_eos_only_where_the_grammar_accepts(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer)
    proc = constraint_factory(compile_json_object(tiny_info), vocab, tiny_eos)()
    logits = mx.zeros((1, vocab))
    start = _allowed(proc([], logits))
    assert tiny_eos[0] not in start
    assert all(tiny_tokenizer.decode([t]).startswith("{") for t in start)
    done = tiny_tokenizer.encode('{"a": 1}', add_special_tokens=False)
    assert _allowed(proc(done, logits)) == {tiny_eos[0]}  # complete: EOS is forced
    assert proc.complete and not proc.failed


def test_eos_allowed_alongside_continuations(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer)
    proc = constraint_factory(compile_grammar('start: "a"+', tiny_info), vocab, tiny_eos)()
    logits = mx.zeros((1, vocab))
    a = tiny_tokenizer.encode("a", add_special_tokens=False)
    assert tiny_eos[0] not in _allowed(proc([], logits))
    allowed = _allowed(proc(a, logits))
    assert tiny_eos[0] in allowed and a[0] in allowed
    assert not proc.complete


def test_each_token_is_consumed_once(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer)
    proc = constraint_factory(compile_json_schema(PERSON_SCHEMA, tiny_info), vocab, tiny_eos)()
    logits = mx.zeros((1, vocab))
    prefix = tiny_tokenizer.encode('{"name": "Al', add_special_tokens=False)
    first = _allowed(proc(prefix[:2], logits))
    assert _allowed(proc(prefix[:2], logits)) == first  # same history: nothing consumed twice
    later = _allowed(proc(prefix, logits))
    assert later != first
    assert not proc.failed


def test_rejected_token_ends_the_request(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...], caplog: pytest.LogCaptureFixture
) -> None:
    vocab = len(tiny_tokenizer)
    proc = constraint_factory(compile_json_object(tiny_info), vocab, tiny_eos)()
    bad = tiny_tokenizer.encode("hello", add_special_tokens=False)
    with caplog.at_level(logging.WARNING, logger="vllm_mlx.structured.processor"):
        masked = proc(bad, mx.zeros((1, vocab)))
    assert _allowed(masked) == {tiny_eos[0]}
    assert proc.failed
    assert "rejected" in caplog.text
    assert _allowed(proc([*bad, 5, 6], mx.zeros((1, vocab)))) == {tiny_eos[0]}  # stays ended


def test_out_of_range_token_does_not_raise(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer) + 40
    proc = constraint_factory(compile_json_object(tiny_info), vocab, tiny_eos)()
    assert _allowed(proc([vocab - 1], mx.zeros((1, vocab)))) == {tiny_eos[0]}
    assert proc.failed


@pytest.mark.parametrize("seed", range(4))
def test_model_vocab_larger_than_tokenizer(
    seed: int, tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    tok_vocab = len(tiny_tokenizer)
    vocab = tok_vocab + 77  # padded lm_head rows the tokenizer never produces
    factory = constraint_factory(compile_json_schema(PERSON_SCHEMA, tiny_info), vocab, tiny_eos)
    proc = factory()
    boosted = mx.concatenate([mx.zeros((1, tok_vocab)), mx.full((1, 77), 100.0)], axis=1)
    assert max(_allowed(proc([], boosted))) < tok_vocab
    ids = _random_walk(factory(), vocab, tiny_eos, seed)
    jsonschema.validate(json.loads(tiny_tokenizer.decode(ids)), PERSON_SCHEMA)


def test_model_vocab_smaller_than_tokenizer(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer) - 5
    proc = constraint_factory(compile_json_object(tiny_info), vocab, tiny_eos)()
    masked = proc([], mx.zeros((1, vocab)))
    assert masked.shape == (1, vocab)
    assert _allowed(masked)


def test_eos_after_completion_keeps_forcing_eos(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    """With ignore_eos the engine goes on after EOS; the constraint only offers EOS."""
    vocab = len(tiny_tokenizer)
    proc = constraint_factory(compile_grammar('start: "a"+', tiny_info), vocab, tiny_eos)()
    a = tiny_tokenizer.encode("a", add_special_tokens=False)
    history = [*a, tiny_eos[0]]
    assert _allowed(proc(history, mx.zeros((1, vocab)))) == {tiny_eos[0]}
    assert proc.complete


def test_factory_makes_fresh_processors(tiny_info: Any, tiny_eos: tuple[int, ...]) -> None:
    factory = constraint_factory(compile_json_object(tiny_info), 100, tiny_eos)
    first, second = factory(), factory()
    assert isinstance(first, GrammarConstraint) and first is not second


@pytest.mark.parametrize(("vocab", "eos"), [(0, (1,)), (100, ())])
def test_factory_checks_its_inputs(vocab: int, eos: tuple[int, ...], tiny_info: Any) -> None:
    with pytest.raises(ValueError):
        constraint_factory(compile_json_object(tiny_info), vocab, eos)


def test_masked_logits_keep_dtype(
    tiny_info: Any, tiny_tokenizer: Any, tiny_eos: tuple[int, ...]
) -> None:
    vocab = len(tiny_tokenizer)
    proc = constraint_factory(compile_json_object(tiny_info), vocab, tiny_eos)()
    masked = proc([], mx.zeros((1, vocab), dtype=mx.bfloat16))
    assert masked.dtype == mx.bfloat16 and masked.shape == (1, vocab)
