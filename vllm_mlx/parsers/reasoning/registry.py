"""Reasoning parsers by name, imported only when asked for."""

from __future__ import annotations

import importlib

from vllm_mlx.parsers.reasoning.base import ReasoningParser

# name -> "module:class"; the module is imported on first use.
_PARSERS: dict[str, str] = {
    "deepseek_r1": "vllm_mlx.parsers.reasoning.deepseek_r1:DeepSeekR1ReasoningParser",
    "qwen3": "vllm_mlx.parsers.reasoning.qwen3:Qwen3ReasoningParser",
}


def reasoning_parser_names() -> tuple[str, ...]:
    """The names ``--reasoning-parser`` accepts, sorted."""
    return tuple(sorted(_PARSERS))


def get_reasoning_parser(name: str) -> type[ReasoningParser]:
    """The parser class for ``name``; build one per request with ``cls(prompt_text)``.

    Raises:
        ValueError: ``name`` is not a known parser (the message lists them).
    """
    target = _PARSERS.get(name)
    if target is None:
        known = ", ".join(reasoning_parser_names())
        raise ValueError(f"unknown reasoning parser {name!r}; choose one of: {known}")
    module_name, _, class_name = target.partition(":")
    parser_cls: type[ReasoningParser] = getattr(importlib.import_module(module_name), class_name)
    return parser_cls
