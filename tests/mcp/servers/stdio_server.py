"""A real MCP server over stdio, for the tests.

Run: ``python tests/mcp/servers/stdio_server.py`` (or ``python -m tests.mcp.servers.stdio_server``).
Tools: echo, fail, sleep, pid, crash, add_tool (see common.py).
"""

from __future__ import annotations

try:
    from .common import build_server
except ImportError:  # run as a script: this folder is on sys.path
    from common import build_server  # type: ignore[no-redef]


def main() -> None:
    build_server("test-stdio").run("stdio")


if __name__ == "__main__":
    main()
