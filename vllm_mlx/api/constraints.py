"""Structured-output constraints for requests: JSON schema, JSON object, forced tool calls."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.engine.types import LogitsProcessorFactory
from vllm_mlx.structured import (
    REQUIRED,
    SchemaError,
    compile_json_object,
    compile_json_schema,
    constraint_factory,
    tokenizer_info,
    tool_call_schema,
)


class ConstraintBuilder:
    """Compiles grammars against the loaded tokenizer (whose index is built once, lazily)."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._info: Any = None
        self._lock = threading.Lock()

    def _tokenizer_info(self) -> Any:
        with self._lock:
            if self._info is None:
                self._info = tokenizer_info(self._tokenizer)
            return self._info

    def _factory(self, grammar: Any) -> LogitsProcessorFactory:
        return constraint_factory(grammar, self._vocab_size, self._tokenizer.eos_token_ids)

    def json_schema(self, schema: Mapping[str, Any], param: str) -> LogitsProcessorFactory:
        try:
            return self._factory(compile_json_schema(dict(schema), self._tokenizer_info()))
        except SchemaError as exc:
            raise InvalidRequest(f"invalid JSON schema: {exc}", param=param) from exc

    def json_object(self) -> LogitsProcessorFactory:
        return self._factory(compile_json_object(self._tokenizer_info()))

    def tool_call(
        self, tools: Sequence[Mapping[str, Any]], name: str | None, param: str
    ) -> LogitsProcessorFactory:
        """Output forced to one call: {"name": ..., "arguments": <that tool's schema>}."""
        try:
            schema = tool_call_schema(list(tools), name or REQUIRED)
        except (SchemaError, ValueError) as exc:
            raise InvalidRequest(str(exc), param=param) from exc
        return self.json_schema(schema, param)
