"""The tools every test MCP server offers, built with the official SDK (``MCPServer``).

Imported by ``stdio_server.py`` and ``http_server.py``; not run on its own.
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build_server(name: str) -> MCPServer:
    server: MCPServer = MCPServer(name, log_level="WARNING")

    # structured_output=True: the result also comes back as structuredContent {"result": text}.
    @server.tool(structured_output=True)
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def fail(message: str) -> str:
        """Always fail with the given message (an MCP tool error, isError=true)."""
        raise ToolError(message)

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Sleep for the given number of seconds, then answer "slept"."""
        await anyio.sleep(seconds)
        return "slept"

    @server.tool()
    def pid() -> int:
        """The server's process id (tests use it to check for orphans)."""
        return os.getpid()

    @server.tool()
    def crash() -> str:
        """Exit the server process at once, as a crash would."""
        os._exit(1)

    @server.tool()
    async def add_tool(name: str, ctx: Context) -> str:
        """Register a new echo tool under ``name`` and send notifications/tools/list_changed."""

        def added(text: str) -> str:
            return text

        server.add_tool(added, name=name, description=f"echo added at run time as {name}")
        await ctx.session.send_tool_list_changed()
        return f"added {name}"

    return server
