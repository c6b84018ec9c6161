"""Reasoning parsers: split a think block from the answer, whole or streaming."""

from vllm_mlx.parsers.reasoning.base import ReasoningDelta, ReasoningParser, ReasoningResult
from vllm_mlx.parsers.reasoning.registry import get_reasoning_parser, reasoning_parser_names

__all__ = [
    "ReasoningDelta",
    "ReasoningParser",
    "ReasoningResult",
    "get_reasoning_parser",
    "reasoning_parser_names",
]
