"""What the MCP layer hands to its routes and to the rest of the server.

Frozen values only: the routes, /health, /v1/status and /v1/capabilities read
these and never touch an SDK session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# The configuration values live with the rest of the config (the bottom floor);
# the MCP package knows them by these names.
from vllm_mlx.config import MCPConfig as MCPConfig
from vllm_mlx.config import MCPServerSpec as ServerSpec
from vllm_mlx.config import MCPTransport as Transport

__all__ = [
    "CallLimited",
    "InvalidArguments",
    "MCPConfig",
    "MCPError",
    "ServerSpec",
    "ServerState",
    "ServerStateName",
    "ServerUnavailable",
    "ToolInfo",
    "ToolResult",
    "ToolService",
    "Transport",
    "UnknownTool",
]

ServerStateName = Literal["starting", "connected", "restarting", "failed", "disabled", "stopped"]


@dataclass(frozen=True)
class ServerState:
    """A server as /v1/mcp/servers shows it."""

    name: str
    transport: Transport
    state: ServerStateName
    tools: int  # tools exposed (after allowed/blocked filtering)
    error: str | None = None  # last failure, one line
    restarts: int = 0


@dataclass(frozen=True)
class ToolInfo:
    """One exposed tool. ``qualified_name`` is ``server__tool``."""

    server: str
    name: str
    qualified_name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """What /v1/mcp/execute returns (content blocks as MCP JSON, structured content kept)."""

    tool_name: str
    content: tuple[Mapping[str, Any], ...]
    structured_content: Mapping[str, Any] | None
    is_error: bool
    error_message: str | None = None


class MCPError(Exception):
    """Base of the errors a call can raise before reaching the tool."""


class UnknownTool(MCPError):  # 404
    pass


class InvalidArguments(MCPError):  # 400: arguments do not validate against the tool's schema
    pass


class CallLimited(MCPError):  # 429: max_tool_calls per minute for this tool
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServerUnavailable(MCPError):  # 503: the tool's server is not connected right now
    pass


class ToolService(Protocol):
    """The manager as the routes see it (manager.MCPManager implements it)."""

    async def start(self) -> None:
        """Connect every enabled server concurrently; failures are recorded, not raised."""

    async def stop(self) -> None:
        """Close every session and end every child process (no orphans)."""

    def servers(self) -> list[ServerState]: ...

    def tools(self) -> list[ToolInfo]: ...

    async def call(self, qualified_name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Validate, rate-check and run one tool call. A tool failure or a timeout comes
        back as ``is_error``; raises the MCPError subclasses above before calling."""
        ...
