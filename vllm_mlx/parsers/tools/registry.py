"""Tool parser registry: names to classes, importing each family only when asked."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from vllm_mlx.parsers.tools.base import ToolParser

# --tool-call-parser name -> (module in this package, class)
_PARSERS: dict[str, tuple[str, str]] = {
    "auto": ("auto", "AutoToolParser"),
    "mistral": ("mistral", "MistralToolParser"),
    "qwen": ("qwen", "QwenToolParser"),
    "llama": ("llama", "LlamaToolParser"),
    "hermes": ("hermes", "HermesToolParser"),
    "deepseek": ("deepseek", "DeepSeekToolParser"),
    "kimi": ("kimi", "KimiToolParser"),
    "granite": ("granite", "GraniteToolParser"),
    "nemotron": ("nemotron", "NemotronToolParser"),
    "xlam": ("xlam", "XlamToolParser"),
    "functionary": ("functionary", "FunctionaryToolParser"),
    "glm47": ("glm47", "Glm47ToolParser"),
}


class UnknownToolParserError(ValueError):
    """The requested tool parser name is not registered."""


def tool_parser_names() -> list[str]:
    """Registered parser names, in the order of the ``--tool-call-parser`` docs."""
    return list(_PARSERS)


def get_tool_parser(name: str) -> type[ToolParser]:
    """The parser class registered as ``name`` (imports its module on first use)."""
    try:
        module, cls = _PARSERS[name]
    except KeyError:
        valid = ", ".join(_PARSERS)
        raise UnknownToolParserError(f"unknown tool parser {name!r}; valid: {valid}") from None
    parser: type[ToolParser] = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    return parser


def create_tool_parser(name: str, tools: Sequence[Mapping[str, Any]] | None = None) -> ToolParser:
    """A fresh parser for one request."""
    return get_tool_parser(name)(tools)
