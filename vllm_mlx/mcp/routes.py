"""MCP routes: list servers and tools, execute one tool call.

Thin: the manager (``app.state.mcp``, a ToolService) does the work; this module only
parses bodies, renders the frozen values of types.py and maps MCPError to the
project's error bodies.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from vllm_mlx.api.errors import APIError, ErrorType, InvalidRequest, OpenAIErrorBody
from vllm_mlx.api.http import parse_body
from vllm_mlx.api.openapi import json_body, response_docs
from vllm_mlx.mcp.types import (
    CallLimited,
    InvalidArguments,
    MCPError,
    ServerState,
    ServerUnavailable,
    ToolInfo,
    ToolResult,
    ToolService,
    UnknownTool,
)

router = APIRouter()

ENDPOINTS = ("/v1/mcp/servers", "/v1/mcp/tools", "/v1/mcp/execute")


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_name: str = Field(min_length=1)  # qualified: server__tool, as /v1/mcp/tools names it
    # An object, or the JSON text of one (a chat tool call's ``function.arguments``).
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class MCPServerInfo(BaseModel):
    name: str
    transport: str  # stdio, sse or streamable-http
    state: str  # starting, connected, restarting, failed, disabled or stopped
    tools: int  # tools exposed after allowed/blocked filtering
    error: str | None  # last failure, one line
    restarts: int


class MCPServerList(BaseModel):
    object: Literal["list"]
    data: list[MCPServerInfo]


class MCPToolList(BaseModel):
    """OpenAI function tools (``{"type": "function", "function": {...}}``), or with
    ``?format=anthropic`` Anthropic tools (``{name, description, input_schema}``)."""

    object: Literal["list"]
    data: list[dict[str, Any]]


class MCPToolResult(BaseModel):
    tool_name: str
    content: list[dict[str, Any]]  # MCP content blocks, e.g. {"type": "text", "text": ...}
    structured_content: dict[str, Any] | None
    is_error: bool  # the tool failed or timed out: the model should be told so
    error_message: str | None


def mcp_service(request: Request) -> ToolService:
    """The app's MCP manager, or a 503 that says how to turn MCP on."""
    service: ToolService | None = getattr(request.app.state, "mcp", None)
    if service is None:
        raise APIError(
            "MCP is not configured: start the server with --mcp-config PATH "
            "(a JSON or YAML file naming the MCP servers).",
            ErrorType.SERVER,
            code="mcp_not_configured",
            status=503,
        )
    return service


@router.get(
    "/v1/mcp/servers", response_model=None, responses=response_docs(MCPServerList, OpenAIErrorBody)
)
async def list_servers(request: Request) -> dict[str, Any]:
    """Each configured MCP server: its transport, state, tool count and last error."""
    states = mcp_service(request).servers()
    return {"object": "list", "data": [server_body(s) for s in states]}


@router.get(
    "/v1/mcp/tools", response_model=None, responses=response_docs(MCPToolList, OpenAIErrorBody)
)
async def list_tools(
    request: Request,
    tool_format: Literal["openai", "anthropic"] = Query("openai", alias="format"),
) -> dict[str, Any]:
    """Every exposed tool, named ``server__tool``, ready to pass as a chat request's tools
    (``?format=anthropic``: as a Messages request's tools)."""
    render = anthropic_tool if tool_format == "anthropic" else openai_tool
    return {"object": "list", "data": [render(t) for t in mcp_service(request).tools()]}


@router.post(
    "/v1/mcp/execute",
    openapi_extra=json_body(ExecuteRequest),
    response_model=None,
    responses=response_docs(MCPToolResult, OpenAIErrorBody),
)
async def execute(request: Request) -> dict[str, Any]:
    """Run one tool call. A tool that fails or times out is a 200 with ``is_error``."""
    service = mcp_service(request)
    body = await parse_body(request, ExecuteRequest)
    try:
        result = await service.call(body.tool_name, _arguments(body.arguments))
    except MCPError as exc:
        raise from_mcp_error(exc) from None
    return result_body(result)


def _arguments(arguments: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"arguments: not valid JSON ({exc.msg})", "arguments") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("arguments: must be a JSON object", "arguments")
    return parsed


def from_mcp_error(exc: MCPError) -> APIError:
    """The one mapping of a refused call to its HTTP status and error body."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, UnknownTool):
        return APIError(message, ErrorType.NOT_FOUND, "tool_name", "tool_not_found")
    if isinstance(exc, InvalidArguments):
        return InvalidRequest(message, "arguments", "invalid_arguments")
    if isinstance(exc, CallLimited):
        retry = max(1, math.ceil(exc.retry_after_s))
        return APIError(message, ErrorType.RATE_LIMIT, code="tool_call_limit", retry_after_s=retry)
    if isinstance(exc, ServerUnavailable):
        return APIError(message, ErrorType.OVERLOADED, code="mcp_server_unavailable")
    return APIError(message, ErrorType.SERVER, code="mcp_error")


def server_body(state: ServerState) -> dict[str, Any]:
    return {
        "name": state.name,
        "transport": state.transport.value,
        "state": state.state,
        "tools": state.tools,
        "error": state.error,
        "restarts": state.restarts,
    }


def openai_tool(tool: ToolInfo) -> dict[str, Any]:
    function = {
        "name": tool.qualified_name,
        "description": tool.description,
        "parameters": dict(tool.input_schema),
    }
    return {"type": "function", "function": function}


def anthropic_tool(tool: ToolInfo) -> dict[str, Any]:
    return {
        "name": tool.qualified_name,
        "description": tool.description,
        "input_schema": dict(tool.input_schema),
    }


def result_body(result: ToolResult) -> dict[str, Any]:
    return {
        "tool_name": result.tool_name,
        "content": [dict(block) for block in result.content],
        "structured_content": None
        if result.structured_content is None
        else dict(result.structured_content),
        "is_error": result.is_error,
        "error_message": result.error_message,
    }


class MCPReport:
    """The MCP service as /health, /v1/status and /v1/capabilities see it
    (``api.tools_report.ToolsReport``)."""

    endpoints = ENDPOINTS

    def __init__(self, service: ToolService) -> None:
        self._service = service

    def summary(self) -> dict[str, int]:
        states = self._service.servers()
        connected = sum(1 for s in states if s.state == "connected")
        return {"servers": len(states), "connected": connected, "tools": self.tool_count()}

    def servers(self) -> list[dict[str, Any]]:
        return [server_body(state) for state in self._service.servers()]

    def tool_count(self) -> int:
        return len(self._service.tools())
