"""Compile JSON schemas, ``json_object`` and Lark grammars for one tokenizer (llguidance).

Compiling checks the grammar, builds a template matcher and warms its lexer once;
each request then gets a cheap deep copy of that template (see ``processor.py``).
Compiling is pure CPU work that releases the GIL and touches no MLX state, so the
API layer may run it off the event loop (``asyncio.to_thread``) for large schemas.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# JSON is written with json.dumps' separators and no free whitespace: models know the
# style, and a model cannot stall in an endless run of spaces or newlines.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
# Error messages stay short: the verbose ones dump the grammar and parser state.
_LIMITS = llguidance.LLParserLimits(verbose_errors=False)

# Schema keywords whose values are one subschema, a list of them, or a name → subschema map.
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions")


class SchemaError(ValueError):
    """The schema or grammar is invalid or uses a feature the matcher does not support."""


@dataclass(frozen=True)
class CompiledGrammar:
    """A grammar checked against one tokenizer; makes a fresh matcher per request."""

    kind: str  # "json_schema", "json_object" or "lark", for logs
    source: str  # the llguidance grammar (JSON text) the template was built from
    tokenizer: llguidance.LLTokenizer  # the tokenizer_info() it was compiled for
    _template: llguidance.LLMatcher = field(repr=False)  # never advanced; only copied

    def new_matcher(self) -> llguidance.LLMatcher:
        """An independent matcher at the start of the grammar."""
        return self._template.deep_copy()


def compile_json_schema(schema: Mapping[str, Any], info: llguidance.LLTokenizer) -> CompiledGrammar:
    """Compile a JSON schema (OpenAI ``response_format`` json_schema) for ``info``.

    Objects that list ``properties`` but say nothing about ``additionalProperties``
    are closed (as OpenAI's strict mode requires), so the output stays within the
    listed keys; every output still validates against the original schema.
    Schemas that use ``allOf`` are left open: closed parts would not intersect.
    Raises :class:`SchemaError` for invalid schemas and unsupported keywords.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    own = copy.deepcopy(dict(schema))
    if not _mentions(own, "allOf"):
        own = _close_objects(own)
    try:
        source = llguidance.LLMatcher.grammar_from_json_schema(own, defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:  # not serializable or not an object schema
        raise SchemaError(f"invalid JSON schema: {exc}") from exc
    return _compile("json_schema", source, info)


def compile_json_object(info: llguidance.LLTokenizer) -> CompiledGrammar:
    """Any JSON object (OpenAI ``response_format`` json_object)."""
    any_object = {"type": "object"}
    source = llguidance.LLMatcher.grammar_from_json_schema(any_object, defaults=JSON_OPTIONS)
    return _compile("json_object", source, info)


def compile_grammar(lark: str, info: llguidance.LLTokenizer) -> CompiledGrammar:
    """Compile a Lark grammar (llguidance's dialect; ``start`` is the top rule)."""
    return _compile("lark", llguidance.LLMatcher.grammar_from_lark(lark), info)


def _compile(kind: str, source: str, info: llguidance.LLTokenizer) -> CompiledGrammar:
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        source, info, limits=_LIMITS
    )
    if is_error:
        raise SchemaError(f"invalid {kind.replace('_', ' ')}: {'; '.join(messages)}")
    template = llguidance.LLMatcher(info, source, log_level=0, limits=_LIMITS)
    if template.is_error():
        raise SchemaError(f"invalid {kind.replace('_', ' ')}: {template.get_error()}")
    _warm(template, info)
    return CompiledGrammar(kind, source, info, template)


def _warm(template: llguidance.LLMatcher, info: llguidance.LLTokenizer) -> None:
    """Compute the first mask once: the lexer states it builds are shared by copies."""
    words = np.zeros((info.vocab_size + 31) // 32, dtype=np.int32)
    template.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)


def _close_objects(schema: Any) -> Any:
    """Add ``additionalProperties: false`` where ``properties`` is given without it."""
    if not isinstance(schema, dict):
        return schema
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for key in _ONE:
        _close_objects(schema.get(key))
    for key in _LIST:
        for sub in schema.get(key) or ():
            _close_objects(sub)
    for key in _MAP:
        sub_map = schema.get(key)
        if isinstance(sub_map, dict):
            for sub in sub_map.values():
                _close_objects(sub)
    return schema


def _mentions(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_mentions(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, key) for v in node)
    return False


_INFO_CACHE: weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()
_INFO_LOCK = threading.Lock()


def tokenizer_info(tokenizer: Any) -> llguidance.LLTokenizer:
    """The llguidance view of a tokenizer, built once per tokenizer object (about 1 s).

    ``tokenizer`` is our ``backend.tokenizer.Tokenizer``, mlx-lm's
    ``TokenizerWrapper`` or an HF fast tokenizer. The result is cached for as long
    as ``tokenizer`` lives; pass the same object each time.
    """
    with _INFO_LOCK:
        cached = _INFO_CACHE.get(tokenizer)
        if cached is None:
            cached = _build_info(tokenizer)
            _INFO_CACHE[tokenizer] = cached
        return cached


def _build_info(tokenizer: Any) -> llguidance.LLTokenizer:
    import llguidance.hf  # imports transformers: only when a model's tokenizer is wrapped
    from transformers import PreTrainedTokenizerFast

    hf = tokenizer
    # Unwrap our Tokenizer (``_hf``) and mlx-lm's TokenizerWrapper (``_tokenizer``).
    for _ in range(3):
        if isinstance(hf, PreTrainedTokenizerFast):
            break
        hf = getattr(hf, "_hf", None) or getattr(hf, "_tokenizer", None)
    if not isinstance(hf, PreTrainedTokenizerFast):
        raise TypeError(f"structured output needs an HF fast tokenizer, not {type(tokenizer)}")
    # The processor decides EOS itself at each step; llguidance only needs some EOS.
    return llguidance.hf.from_tokenizer(hf, eos_token=_eos_ids(tokenizer, hf) or None)


def _eos_ids(tokenizer: Any, hf: Any) -> list[int]:
    """The wrapper's EOS set (it adds generation_config ids), else the HF eos id."""
    ids = getattr(tokenizer, "eos_token_ids", None) if tokenizer is not hf else None
    if ids is None:
        ids = hf.eos_token_id
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else sorted(int(i) for i in ids)
