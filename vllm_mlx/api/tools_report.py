"""What /health, /v1/status and /v1/capabilities show of a tool service (MCP).

The MCP package sits above the api floor (its routes use the api's errors), so the
api asks for its state through this protocol; ``server/app.py`` puts the MCP
package's implementation on ``app.state.tools_report`` (None without --mcp-config).
"""

from __future__ import annotations

from typing import Any, Protocol


class ToolsReport(Protocol):
    endpoints: tuple[str, ...]  # the routes the tool service adds

    def summary(self) -> dict[str, int]:
        """/health's entry: servers configured, connected, and tools exposed."""
        ...

    def servers(self) -> list[dict[str, Any]]:
        """/v1/status's entry: each server's name, transport, state, tools, error."""
        ...

    def tool_count(self) -> int: ...
