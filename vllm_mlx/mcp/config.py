"""Read and validate ``--mcp-config`` (JSON, or YAML for .yaml/.yml) into an ``MCPConfig``.

Two layouts are accepted::

    {"mcpServers": {"fs": {"command": "npx", "args": ["-y", "server-fs", "/tmp"], "env": {}},
                    "web": {"url": "https://example.com/mcp", "headers": {"X-Key": "k"}}}}

    {"servers": {"fs": {"transport": "stdio", "command": "npx", "args": [...],
                        "enabled": true, "timeout": 20, "allowed_tools": ["read_file"]}},
     "max_tool_calls": 30, "default_timeout": 30}

The first is Claude Desktop's; the second the reference server's. Any problem raises
``MCPConfigError`` whose message is one line: ``FILE: KEY.PATH: problem``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from vllm_mlx.mcp.security import is_forbidden_env_key, server_name_problem, shell_metacharacters
from vllm_mlx.mcp.types import MCPConfig, ServerSpec, Transport

_TOP_KEYS = frozenset({"mcpServers", "servers", "max_tool_calls", "default_timeout"})
_SERVER_KEYS = frozenset(
    {
        "transport",
        "type",
        "command",
        "args",
        "env",
        "url",
        "headers",
        "enabled",
        "disabled",
        "timeout",
        "allowed_tools",
        "blocked_tools",
    }
)
_STDIO_ONLY = ("command", "args", "env")
_REMOTE_ONLY = ("url", "headers")
# "http" is what Claude Code writes for streamable HTTP.
_TRANSPORTS = {
    "stdio": Transport.STDIO,
    "sse": Transport.SSE,
    "streamable-http": Transport.STREAMABLE_HTTP,
    "streamable_http": Transport.STREAMABLE_HTTP,
    "http": Transport.STREAMABLE_HTTP,
}


class MCPConfigError(ValueError):
    """A bad MCP config file; ``str()`` is one line naming the file, the key and the problem."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = " ".join(problem.split())  # keep it to one line
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {self.problem}")


class _Problem(Exception):
    """Raised while validating; load_config adds the file name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


class _Object(dict[str, Any]):
    """A parsed mapping that remembers keys it saw twice (both parsers drop them silently)."""

    duplicates: list[str]


def _object_from_pairs(pairs: list[tuple[Any, Any]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(str(key))
        obj[key] = value
    return obj


class _YamlLoader(yaml.SafeLoader):
    pass


def _construct_yaml_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Object:
    loader.flatten_mapping(node)
    pairs = [
        (loader.construct_object(k, deep=True), loader.construct_object(v, deep=True))
        for k, v in node.value
    ]
    return _object_from_pairs(pairs)


_YamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_yaml_mapping,
)


def load_config(path: str | Path) -> MCPConfig:
    """Read, parse and validate an MCP config file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MCPConfigError(file, "", f"cannot read the file ({exc})") from exc
    try:
        data = _parse(text, yaml_syntax=Path(path).suffix.lower() in (".yaml", ".yml"))
        return _config(data)
    except _Problem as exc:
        raise MCPConfigError(file, exc.key, exc.problem) from None


def _parse(text: str, yaml_syntax: bool) -> Any:
    if yaml_syntax:
        try:
            return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            reason = getattr(exc, "problem", None) or "syntax error"
            raise _Problem("", f"invalid YAML{where}: {reason}") from None
    try:
        return json.loads(text, object_pairs_hook=_object_from_pairs)
    except json.JSONDecodeError as exc:
        raise _Problem(
            "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def _config(data: Any) -> MCPConfig:
    if data is None:
        raise _Problem("", "the file is empty")
    top = _mapping(data, "")
    _no_unknown_keys(top, _TOP_KEYS, "")
    if "mcpServers" in top and "servers" in top:
        raise _Problem("servers", "give either 'mcpServers' or 'servers', not both")
    root = "mcpServers" if "mcpServers" in top else "servers"
    if root not in top:
        raise _Problem("", "expected a 'mcpServers' or 'servers' object")
    servers = _mapping(top[root], root)
    specs = tuple(_server(str(name), entry, f"{root}.{name}") for name, entry in servers.items())
    max_calls = top.get("max_tool_calls")
    if max_calls is not None and (not _is_int(max_calls) or max_calls < 1):
        raise _Problem("max_tool_calls", f"must be a positive integer, got {max_calls!r}")
    default_timeout = top.get("default_timeout", 30.0)
    _positive_number(default_timeout, "default_timeout")
    return MCPConfig(
        servers=specs, max_tool_calls=max_calls, default_timeout_s=float(default_timeout)
    )


def _server(name: str, entry: Any, key: str) -> ServerSpec:
    problem = server_name_problem(name)
    if problem:
        raise _Problem(key, f"server name {name!r} {problem}")
    fields = _mapping(entry, key)
    _no_unknown_keys(fields, _SERVER_KEYS, key)
    transport = _transport(fields, key)
    misplaced = _REMOTE_ONLY if transport is Transport.STDIO else _STDIO_ONLY
    for other in misplaced:
        if other in fields:
            raise _Problem(f"{key}.{other}", f"is not used by the {transport.value} transport")
    enabled = _bool(fields.get("enabled", True), f"{key}.enabled")
    if "disabled" in fields:
        enabled = enabled and not _bool(fields["disabled"], f"{key}.disabled")
    timeout = fields.get("timeout")
    if timeout is not None:
        _positive_number(timeout, f"{key}.timeout")
    allowed = fields.get("allowed_tools")
    return ServerSpec(
        name=name,
        transport=transport,
        command=_command(fields, key) if transport is Transport.STDIO else None,
        args=_args(fields.get("args", []), f"{key}.args"),
        env=_env(fields.get("env", {}), f"{key}.env"),
        url=None if transport is Transport.STDIO else _url(fields, key),
        headers=_str_map(fields.get("headers", {}), f"{key}.headers"),
        enabled=enabled,
        timeout_s=None if timeout is None else float(timeout),
        allowed_tools=None if allowed is None else _names(allowed, f"{key}.allowed_tools"),
        blocked_tools=_names(fields.get("blocked_tools", []), f"{key}.blocked_tools"),
    )


def _transport(fields: Mapping[str, Any], key: str) -> Transport:
    if "transport" in fields and "type" in fields:
        raise _Problem(f"{key}.type", "give either 'transport' or 'type', not both")
    field = "transport" if "transport" in fields else "type"
    value = fields.get(field)
    if value is None:
        if "command" in fields and "url" in fields:
            raise _Problem(key, "give either 'command' (stdio) or 'url' (remote), not both")
        if "command" in fields:
            return Transport.STDIO
        if "url" in fields:
            return Transport.STREAMABLE_HTTP
        raise _Problem(f"{key}.command", "missing: give 'command' (stdio) or 'url' (remote)")
    if not isinstance(value, str) or value.lower() not in _TRANSPORTS:
        raise _Problem(
            f"{key}.{field}",
            f"unknown transport {value!r} (expected stdio, sse or streamable-http)",
        )
    return _TRANSPORTS[value.lower()]


def _command(fields: Mapping[str, Any], key: str) -> str:
    command = fields.get("command")
    if command is None:
        raise _Problem(f"{key}.command", "missing (required for the stdio transport)")
    if not isinstance(command, str) or not command.strip():
        raise _Problem(f"{key}.command", f"must be a non-empty string, got {command!r}")
    _no_metacharacters(command, f"{key}.command")
    return command


def _args(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Problem(key, f"must be a list of strings, got {_type(value)}")
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise _Problem(f"{key}[{i}]", f"must be a string, got {_type(arg)}")
        _no_metacharacters(arg, f"{key}[{i}]")
    return tuple(value)


def _env(value: Any, key: str) -> dict[str, str]:
    env = _str_map(value, key)
    for name in env:
        if is_forbidden_env_key(name):
            raise _Problem(
                f"{key}.{name}",
                "may not be set (PATH, LD_*, DYLD_*, PYTHONPATH and NODE_PATH are refused)",
            )
    return env


def _url(fields: Mapping[str, Any], key: str) -> str:
    url = fields.get("url")
    if url is None:
        raise _Problem(f"{key}.url", "missing (required for a remote transport)")
    if not isinstance(url, str):
        raise _Problem(f"{key}.url", f"must be a string, got {_type(url)}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Problem(f"{key}.url", f"must be an http(s) URL, got {url!r}")
    return url


def _names(value: Any, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Problem(key, "must be a list of tool names (strings)")
    return frozenset(value)


def _str_map(value: Any, key: str) -> dict[str, str]:
    mapping = _mapping(value, key)
    for name, item in mapping.items():
        if not isinstance(item, str):
            raise _Problem(f"{key}.{name}", f"must be a string, got {_type(item)}")
    return dict(mapping)


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Problem(key, f"must be an object, got {_type(value)}")
    duplicates = getattr(value, "duplicates", [])
    if duplicates:
        where = f"{key}.{duplicates[0]}" if key else duplicates[0]
        raise _Problem(where, "duplicate key")
    for name in value:
        if not isinstance(name, str):
            raise _Problem(key, f"keys must be strings, got {name!r}")
    return value


def _no_unknown_keys(fields: Mapping[str, Any], known: frozenset[str], key: str) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise _Problem(where, f"unknown key (expected one of {', '.join(sorted(known))})")


def _no_metacharacters(value: str, key: str) -> None:
    found = shell_metacharacters(value)
    if found:
        raise _Problem(
            key, f"contains shell metacharacters {found!r}; commands run without a shell"
        )


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _Problem(key, f"must be true or false, got {value!r}")
    return value


def _positive_number(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _Problem(key, f"must be a positive number of seconds, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
