"""Tool-call parsers: one module per model family, chosen by name through the registry."""

from vllm_mlx.parsers.tools.base import (
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    ToolParser,
    ToolParseResult,
)
from vllm_mlx.parsers.tools.registry import (
    UnknownToolParserError,
    create_tool_parser,
    get_tool_parser,
    tool_parser_names,
)

__all__ = [
    "StreamDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolParseResult",
    "ToolParser",
    "UnknownToolParserError",
    "create_tool_parser",
    "get_tool_parser",
    "tool_parser_names",
]
