import pytest

from vllm_mlx.mcp.security import (
    CallLimiter,
    child_environment,
    filter_tools,
    is_forbidden_env_key,
    server_name_problem,
    shell_metacharacters,
    tool_allowed,
)
from vllm_mlx.mcp.types import CallLimited


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("npx", ""),
        ("/usr/bin/python3.11", ""),
        ("--root=/tmp/a b", ""),
        ("a;rm -rf /", ";"),
        ("a && b", "&"),
        ("a | b", "|"),
        ("$HOME", "$"),
        ("`id`", "`"),
        ("<in >out", "<>"),
        ("line\nbreak", "\n"),
    ],
)
def test_shell_metacharacters(value: str, found: str) -> None:
    assert shell_metacharacters(value) == found


@pytest.mark.parametrize(
    "key", ["PATH", "path", "LD_PRELOAD", "ld_library_path", "DYLD_INSERT_LIBRARIES", "PYTHONPATH"]
)
def test_forbidden_env_keys(key: str) -> None:
    assert is_forbidden_env_key(key)


@pytest.mark.parametrize("key", ["HOME", "API_KEY", "PYTHONUNBUFFERED", "NODE_ENV", "OLDPATH"])
def test_allowed_env_keys(key: str) -> None:
    assert not is_forbidden_env_key(key)


def test_node_path_is_forbidden() -> None:
    assert is_forbidden_env_key("NODE_PATH")


def test_child_environment_is_minimal_plus_config() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "OPENAI_API_KEY": "secret",
        "SHELL": "() { evil; }",
    }
    env = child_environment({"TOKEN": "t"}, parent)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "TOKEN": "t"}


@pytest.mark.parametrize(
    ("name", "ok"),
    [("fs", True), ("my-server_2", True), ("a__b", False), ("a.b", False), ("", False)],
)
def test_server_names(name: str, ok: bool) -> None:
    assert (server_name_problem(name) is None) is ok


def test_tool_filtering() -> None:
    names = ["read", "write", "delete"]
    assert filter_tools(names, None) == names
    assert filter_tools(names, frozenset({"read", "write"})) == ["read", "write"]
    assert filter_tools(names, None, frozenset({"delete"})) == ["read", "write"]
    assert filter_tools(names, frozenset({"read", "delete"}), frozenset({"delete"})) == ["read"]
    assert not tool_allowed("x", frozenset())


def test_call_limiter_moving_window() -> None:
    now = [100.0]
    limiter = CallLimiter(2, window_s=60.0, clock=lambda: now[0])
    limiter.acquire("a__t")
    now[0] = 130.0
    limiter.acquire("a__t")
    limiter.acquire("a__other")  # each tool has its own window
    with pytest.raises(CallLimited) as info:
        limiter.acquire("a__t")
    assert info.value.retry_after_s == pytest.approx(30.0)
    now[0] = 160.0  # the first call left the window
    limiter.acquire("a__t")
    with pytest.raises(CallLimited):
        limiter.acquire("a__t")


def test_call_limiter_off() -> None:
    limiter = CallLimiter(None)
    for _ in range(1000):
        limiter.acquire("a__t")
    with pytest.raises(ValueError):
        CallLimiter(0)
