"""Structured output: JSON schema, ``json_object`` or Lark grammar → per-token mask.

Built on llguidance (CPU, no torch). The API layer uses it like this::

    info = tokenizer_info(loaded.tokenizer)          # once per model (~1 s), cached
    grammar = compile_json_schema(schema, info)      # per request; SchemaError → 400
    factory = constraint_factory(grammar, vocab_size, loaded.eos_token_ids)
    GenerationRequest(..., logits_processors=(factory,))

For a forced tool call, compile ``tool_call_schema(tools, "required" | name)``.
"""

from vllm_mlx.structured.grammar import (
    CompiledGrammar,
    SchemaError,
    compile_grammar,
    compile_json_object,
    compile_json_schema,
    tokenizer_info,
)
from vllm_mlx.structured.processor import GrammarConstraint, constraint_factory
from vllm_mlx.structured.tools import REQUIRED, tool_call_schema

__all__ = [
    "REQUIRED",
    "CompiledGrammar",
    "GrammarConstraint",
    "SchemaError",
    "compile_grammar",
    "compile_json_object",
    "compile_json_schema",
    "constraint_factory",
    "tokenizer_info",
    "tool_call_schema",
]
