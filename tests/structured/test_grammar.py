"""Compiling schemas and grammars: errors, object closing, tokenizer_info caching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.structured.schemas import PERSON_SCHEMA
from vllm_mlx.structured import (
    CompiledGrammar,
    SchemaError,
    compile_grammar,
    compile_json_object,
    compile_json_schema,
    tokenizer_info,
)
from vllm_mlx.structured.grammar import _close_objects


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "strng"}, "Invalid type"),
        ({"not": {"type": "string"}}, "not"),  # unsupported keyword
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "pattern": "(("}, "regex"),
        ({"type": "string", "format": "bogus"}, "format"),
        ({"$ref": "#/$defs/missing"}, "missing"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
        ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "incompatible"),
    ],
)
def test_invalid_schemas_raise_schema_error(
    schema: dict[str, Any], fragment: str, tiny_info: Any
) -> None:
    with pytest.raises(SchemaError, match=fragment):
        compile_json_schema(schema, tiny_info)


@pytest.mark.parametrize("schema", [True, [], "string", None])
def test_non_object_schema_is_a_schema_error(schema: Any, tiny_info: Any) -> None:
    with pytest.raises(SchemaError):
        compile_json_schema(schema, tiny_info)


def test_schema_error_is_a_value_error() -> None:
    assert issubclass(SchemaError, ValueError)


def test_valid_schemas_compile(tiny_info: Any) -> None:
    grammar = compile_json_schema(PERSON_SCHEMA, tiny_info)
    assert isinstance(grammar, CompiledGrammar)
    assert grammar.kind == "json_schema"
    assert grammar.tokenizer is tiny_info
    assert compile_json_object(tiny_info).kind == "json_object"
    for draft in (
        "https://json-schema.org/draft/2020-12/schema",
        "http://json-schema.org/draft-07/schema#",
    ):
        annotated = {"$schema": draft, "title": "T", "description": "d", "type": "object"}
        compile_json_schema(annotated, tiny_info)


def test_compiling_does_not_touch_the_callers_schema(tiny_info: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    compile_json_schema(schema, tiny_info)
    assert schema == {"type": "object", "properties": {"a": {"type": "integer"}}}


def test_objects_with_properties_are_closed() -> None:
    schema = {
        "type": "object",
        "properties": {
            # A property named "properties" is data, not a subschema to close.
            "properties": {"type": "object", "properties": {"x": {}}},
            "open": {"type": "object", "properties": {}, "additionalProperties": True},
            "list": {"type": "array", "items": {"properties": {"y": {}}}},
        },
        "$defs": {"d": {"anyOf": [{"properties": {"z": {}}}, {"type": "null"}]}},
    }
    closed = _close_objects(schema)
    assert closed["additionalProperties"] is False
    props = closed["properties"]
    assert "additionalProperties" not in props  # the name → schema map itself
    assert props["properties"]["additionalProperties"] is False
    assert props["open"]["additionalProperties"] is True
    assert props["list"]["items"]["additionalProperties"] is False
    assert closed["$defs"]["d"]["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in closed["$defs"]["d"]["anyOf"][1]


def test_all_of_schemas_stay_open(tiny_info: Any, tiny_tokenizer: Any) -> None:
    """Closing each allOf part would leave no object that satisfies them all."""
    schema = {
        "$defs": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}}},
        "allOf": [
            {"$ref": "#/$defs/Base"},
            {"properties": {"tag": {"type": "string"}}, "required": ["id", "tag"]},
        ],
    }
    matcher = compile_json_schema(schema, tiny_info).new_matcher()
    doc = tiny_tokenizer.encode('{"id": 1, "tag": "x"}', add_special_tokens=False)
    assert matcher.consume_tokens(doc), matcher.get_error()
    assert matcher.is_accepting()


def test_lark_grammar(tiny_info: Any) -> None:
    assert compile_grammar('start: "yes" | "no"', tiny_info).kind == "lark"
    with pytest.raises(SchemaError):
        compile_grammar("start: undefined_rule", tiny_info)


def test_matchers_are_independent(tiny_info: Any, tiny_tokenizer: Any) -> None:
    grammar = compile_json_object(tiny_info)
    first, second = grammar.new_matcher(), grammar.new_matcher()
    assert first.consume_tokens(tiny_tokenizer.encode("{}", add_special_tokens=False))
    assert first.is_stopped()
    assert not second.is_stopped()


def test_tokenizer_info_is_cached_per_tokenizer(tiny_tokenizer: Any) -> None:
    assert tokenizer_info(tiny_tokenizer) is tokenizer_info(tiny_tokenizer)


def test_tokenizer_info_unwraps_our_tokenizer_and_mlx_lm(tiny_llama_path: Path) -> None:
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from vllm_mlx.backend.tokenizer import Tokenizer

    wrapper = load_tokenizer(tiny_llama_path)
    ours = Tokenizer(wrapper, frozenset({1, 2}))
    for tok in (wrapper, ours):
        info = tokenizer_info(tok)
        assert info.vocab_size == len(wrapper._tokenizer)
    assert sorted(tokenizer_info(ours).eos_tokens) == [1, 2]


def test_tokenizer_info_rejects_other_objects() -> None:
    class NotATokenizer:
        pass

    with pytest.raises(TypeError):
        tokenizer_info(NotATokenizer())
