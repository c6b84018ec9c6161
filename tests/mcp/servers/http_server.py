"""A real MCP server over streamable HTTP (default) or SSE on 127.0.0.1, for the tests.

Run: ``python tests/mcp/servers/http_server.py --port 8123 [--transport sse]``.
Streamable HTTP serves ``http://127.0.0.1:PORT/mcp``; SSE serves ``http://127.0.0.1:PORT/sse``.
Tools: echo, fail, sleep, pid, crash, add_tool (see common.py).
"""

from __future__ import annotations

import argparse

try:
    from .common import build_server
except ImportError:  # run as a script: this folder is on sys.path
    from common import build_server  # type: ignore[no-redef]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--transport", choices=["streamable-http", "sse"], default="streamable-http"
    )
    args = parser.parse_args()
    server = build_server(f"test-{args.transport}")
    if args.transport == "sse":
        server.run("sse", host="127.0.0.1", port=args.port)
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
