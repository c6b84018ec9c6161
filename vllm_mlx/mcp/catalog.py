"""SDK values in, frozen values out: tool listings, argument checks and call results.

Pure functions, so they are tested without a server; manager.py owns the sessions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types
from jsonschema import exceptions as schema_errors
from jsonschema import validators
from jsonschema.protocols import Validator

from vllm_mlx.mcp.security import QUALIFIED_SEPARATOR, tool_allowed
from vllm_mlx.mcp.types import InvalidArguments, ServerSpec, ToolInfo, ToolResult

log = logging.getLogger(__name__)

# OpenAI function names allow only these; a tool named otherwise would break a chat request.
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]+")
_MAX_REASON = 300


@dataclass(frozen=True)
class CatalogEntry:
    info: ToolInfo  # what tools() exposes
    validator: Validator  # checks arguments before the call


def qualified_name(server: str, tool: str) -> str:
    return f"{server}{QUALIFIED_SEPARATOR}{tool}"


def split_qualified_name(name: str) -> tuple[str, str] | None:
    """``server__tool`` → (server, tool); server names never contain ``__``."""
    server, sep, tool = name.partition(QUALIFIED_SEPARATOR)
    return (server, tool) if sep and server and tool else None


def build_catalog(spec: ServerSpec, tools: Iterable[mcp_types.Tool]) -> dict[str, CatalogEntry]:
    """The tools of one server that are exposed: allowed, not blocked, with a usable schema."""
    catalog: dict[str, CatalogEntry] = {}
    for tool in tools:
        if not tool_allowed(tool.name, spec.allowed_tools, spec.blocked_tools):
            continue
        if not _FUNCTION_NAME.fullmatch(tool.name):
            log.warning(
                "MCP server %r: skipping tool %r (name not [A-Za-z0-9_-])", spec.name, tool.name
            )
            continue
        schema = dict(tool.input_schema)
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except schema_errors.SchemaError as exc:
            log.warning(
                "MCP server %r: skipping tool %r (bad input schema: %s)",
                spec.name,
                tool.name,
                exc.message,
            )
            continue
        info = ToolInfo(
            server=spec.name,
            name=tool.name,
            qualified_name=qualified_name(spec.name, tool.name),
            description=tool.description or tool.title or "",
            input_schema=schema,
        )
        catalog[tool.name] = CatalogEntry(info=info, validator=cls(schema))
    return catalog


def check_arguments(entry: CatalogEntry, arguments: Mapping[str, Any]) -> None:
    """Raise ``InvalidArguments`` with one line naming the first offending path."""
    error = schema_errors.best_match(entry.validator.iter_errors(dict(arguments)))
    if error is None:
        return
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise InvalidArguments(one_line(f"arguments{path}: {error.message}"))


def to_tool_result(name: str, result: mcp_types.CallToolResult) -> ToolResult:
    """Keep every content block as MCP JSON and the structured content as sent."""
    content = tuple(
        block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
    )
    message = None
    if result.is_error:
        texts = [block.text for block in result.content if isinstance(block, mcp_types.TextContent)]
        message = one_line(" ".join(texts)) or "the tool reported an error"
    return ToolResult(
        tool_name=name,
        content=content,
        structured_content=result.structured_content,
        is_error=bool(result.is_error),
        error_message=message,
    )


def error_result(name: str, message: str) -> ToolResult:
    """A call that failed after it was sent (timeout, lost connection): the agent reads it."""
    text = one_line(message)
    return ToolResult(
        tool_name=name,
        content=({"type": "text", "text": text},),
        structured_content=None,
        is_error=True,
        error_message=text,
    )


def one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 1] + "…"


def describe(exc: BaseException) -> str:
    """One line for an exception, unwrapping the task-group groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
