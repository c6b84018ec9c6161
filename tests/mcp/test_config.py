import json
from pathlib import Path
from typing import Any

import pytest

from vllm_mlx.mcp.config import MCPConfigError, load_config
from vllm_mlx.mcp.types import Transport


def write(tmp_path: Path, data: Any, name: str = "mcp.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def error_of(tmp_path: Path, data: Any, name: str = "mcp.json") -> str:
    with pytest.raises(MCPConfigError) as info:
        load_config(write(tmp_path, data, name))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / name))
    return message


def test_claude_desktop_format(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            {
                "mcpServers": {
                    "fs": {
                        "command": "npx",
                        "args": ["-y", "server-fs", "/tmp"],
                        "env": {"K": "v"},
                    },
                    "web": {"url": "https://example.com/mcp", "headers": {"X-Key": "k"}},
                    "old": {"url": "http://127.0.0.1:9/sse", "type": "sse"},
                    "code": {"type": "http", "url": "http://127.0.0.1:9/mcp"},
                }
            },
        )
    )
    fs, web, old, code = config.servers
    assert (fs.name, fs.transport, fs.command, fs.args) == (
        "fs",
        Transport.STDIO,
        "npx",
        ("-y", "server-fs", "/tmp"),
    )
    assert fs.env == {"K": "v"}
    assert (web.transport, web.url, web.headers) == (
        Transport.STREAMABLE_HTTP,
        "https://example.com/mcp",
        {"X-Key": "k"},
    )
    assert old.transport is Transport.SSE
    assert code.transport is Transport.STREAMABLE_HTTP
    assert config.max_tool_calls is None
    assert config.default_timeout_s == 30.0


def test_reference_format(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            {
                "servers": {
                    "fs": {
                        "transport": "stdio",
                        "command": "python",
                        "enabled": False,
                        "timeout": 5,
                        "allowed_tools": ["read"],
                        "blocked_tools": ["write"],
                    },
                    "remote": {"transport": "streamable-http", "url": "http://127.0.0.1:1/mcp"},
                },
                "max_tool_calls": 10,
                "default_timeout": 12.5,
            },
        )
    )
    fs, remote = config.servers
    assert not fs.enabled
    assert fs.timeout_s == 5.0
    assert fs.allowed_tools == frozenset({"read"})
    assert fs.blocked_tools == frozenset({"write"})
    assert remote.allowed_tools is None
    assert remote.timeout_s is None
    assert (config.max_tool_calls, config.default_timeout_s) == (10, 12.5)


def test_yaml(tmp_path: Path) -> None:
    text = "servers:\n  fs:\n    command: python\n    args: [-m, server]\nmax_tool_calls: 3\n"
    config = load_config(write(tmp_path, text, "mcp.yaml"))
    assert config.servers[0].args == ("-m", "server")
    assert config.max_tool_calls == 3


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"mcpServers": {"fs": {"args": ["x"]}}}, "mcpServers.fs.command", "missing"),
        ({"servers": {"fs": {"transport": "stdio"}}}, "servers.fs.command", "missing"),
        ({"servers": {"w": {"transport": "sse"}}}, "servers.w.url", "missing"),
        ({"servers": {"fs": {"transport": "ws", "url": "x"}}}, "servers.fs.transport", "unknown"),
        ({"mcpServers": {"fs": {"type": "grpc", "command": "x"}}}, "mcpServers.fs.type", "unknown"),
        ({"servers": {"fs": {"command": "x", "cwd": "/"}}}, "servers.fs.cwd", "unknown key"),
        ({"servers": {}, "extra": 1}, "extra", "unknown key"),
        ({"servers": {"fs": {"command": "x", "env": {"PATH": "/x"}}}}, "servers.fs.env.PATH", ""),
        ({"servers": {"fs": {"command": "x", "env": {"ld_preload": "a"}}}}, "env.ld_preload", ""),
        ({"servers": {"fs": {"command": "x", "env": {"DYLD_X": "a"}}}}, "env.DYLD_X", ""),
        ({"servers": {"fs": {"command": "x", "env": {"PYTHONPATH": "a"}}}}, "env.PYTHONPATH", ""),
        ({"servers": {"fs": {"command": "x", "env": {"NODE_PATH": "a"}}}}, "env.NODE_PATH", ""),
        ({"servers": {"fs": {"command": "x", "env": {"N": 1}}}}, "servers.fs.env.N", "string"),
        ({"servers": {"fs": {"command": "sh -c 'a;b'"}}}, "servers.fs.command", "metachar"),
        ({"servers": {"fs": {"command": "x", "args": ["ok", "$(id)"]}}}, "fs.args[1]", "metachar"),
        ({"servers": {"fs": {"command": "x", "args": "a b"}}}, "servers.fs.args", "list"),
        ({"servers": {"fs": {"command": 3}}}, "servers.fs.command", "string"),
        ({"servers": {"w": {"url": "file:///etc/passwd"}}}, "servers.w.url", "http"),
        ({"servers": {"w": {"url": "ftp://h/x"}}}, "servers.w.url", "http"),
        ({"servers": {"a__b": {"command": "x"}}}, "servers.a__b", "__"),
        ({"servers": {"a.b": {"command": "x"}}}, "servers.a.b", "letters"),
        ({"servers": {"fs": {"command": "x", "url": "http://h"}}}, "servers.fs", "not both"),
        ({"servers": {"fs": {"command": "x", "headers": {}}}}, "fs.headers", "not used"),
        ({"servers": {"fs": {"command": "x", "enabled": "yes"}}}, "fs.enabled", "true or false"),
        ({"servers": {"fs": {"command": "x", "timeout": -1}}}, "fs.timeout", "positive"),
        ({"servers": {"fs": {"command": "x", "allowed_tools": "a"}}}, "fs.allowed_tools", "list"),
        ({"servers": {}, "max_tool_calls": 0}, "max_tool_calls", "positive"),
        ({"servers": {}, "default_timeout": "3"}, "default_timeout", "positive"),
        ({"servers": []}, "servers", "object"),
        ({"tools": {}}, "tools", "unknown key"),
        ({}, "", "'mcpServers' or 'servers'"),
        ([], "", "object"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, data: Any, key: str, words: str) -> None:
    message = error_of(tmp_path, data)
    assert key in message
    assert words in message


def test_bad_json_gives_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, '{"servers": {\n  "fs": {"command": "x",}\n}}')
    assert "invalid JSON at line 2 column" in message


def test_bad_yaml_gives_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "servers:\n  fs: {command: [x\n", "mcp.yml")
    assert "invalid YAML at line" in message


def test_duplicate_server_names(tmp_path: Path) -> None:
    text = '{"servers": {"fs": {"command": "a"}, "fs": {"command": "b"}}}'
    assert "servers.fs: duplicate key" in error_of(tmp_path, text)
    yaml_text = "servers:\n  fs: {command: a}\n  fs: {command: b}\n"
    assert "servers.fs: duplicate key" in error_of(tmp_path, yaml_text, "mcp.yaml")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "empty" in error_of(tmp_path, "", "mcp.yaml")
    with pytest.raises(MCPConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json")


def test_both_roots_refused(tmp_path: Path) -> None:
    assert "not both" in error_of(tmp_path, {"servers": {}, "mcpServers": {}})
