"""The MCP security rules as small pure functions (plus one call limiter).

config.py uses the checks to refuse a bad file at start-up; manager.py uses the
environment builder, the tool filter and the limiter at run time.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from vllm_mlx.mcp.types import CallLimited

# Characters a shell would interpret. Commands run without a shell, so these are
# never needed; refusing them stops configs written for `sh -c` from sneaking through.
SHELL_METACHARACTERS = frozenset(";&|$`<>\n\r\0")

# Variables that change which code a child loads; a config may not set them.
_FORBIDDEN_ENV_EXACT = frozenset({"PATH", "PYTHONPATH", "NODE_PATH"})
_FORBIDDEN_ENV_PREFIXES = ("LD_", "DYLD_")

# What a child inherits from us (the SDK's default set plus locale and temp dir);
# everything else in our environment, API keys included, stays here.
INHERITED_ENV_VARS = (
    "HOME",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TERM",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
)

_MCP_NAME = re.compile(r"[A-Za-z0-9_-]+")
QUALIFIED_SEPARATOR = "__"


def shell_metacharacters(value: str) -> str:
    """The shell metacharacters in ``value`` (in order, each once); empty when it is safe."""
    seen = dict.fromkeys(ch for ch in value if ch in SHELL_METACHARACTERS)
    return "".join(seen)


def is_forbidden_env_key(key: str) -> bool:
    """Whether a config may not set this variable (case-insensitive)."""
    upper = key.upper()
    return upper in _FORBIDDEN_ENV_EXACT or upper.startswith(_FORBIDDEN_ENV_PREFIXES)


def server_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a server, or None when it can."""
    if not _MCP_NAME.fullmatch(name):
        return "must use only letters, digits, '_' and '-'"
    if QUALIFIED_SEPARATOR in name:
        return f"must not contain {QUALIFIED_SEPARATOR!r} (it separates server and tool)"
    return None


def child_environment(
    extra: Mapping[str, str], parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a stdio server: a minimal inherited set plus the config's ``env``.

    Values that look like exported shell functions (``() {``) are not inherited.
    """
    source = os.environ if parent is None else parent
    env = {
        key: source[key]
        for key in INHERITED_ENV_VARS
        if key in source and not source[key].startswith("()")
    }
    env.update(extra)
    return env


def tool_allowed(
    name: str, allowed: frozenset[str] | None, blocked: frozenset[str] = frozenset()
) -> bool:
    """Whether a tool the server lists is exposed: on the allow list (if any), not blocked."""
    return name not in blocked and (allowed is None or name in allowed)


def filter_tools(
    names: Iterable[str], allowed: frozenset[str] | None, blocked: frozenset[str] = frozenset()
) -> list[str]:
    return [name for name in names if tool_allowed(name, allowed, blocked)]


class CallLimiter:
    """At most ``max_calls`` per key in any moving ``window_s`` window.

    ``clock`` is injectable so tests need not sleep; it must be monotonic.
    """

    def __init__(
        self,
        max_calls: int | None,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_calls is not None and max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self._max = max_calls
        self._window = window_s
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}

    def acquire(self, key: str) -> None:
        """Count one call for ``key``, or raise ``CallLimited`` with the seconds to wait."""
        if self._max is None:
            return
        now = self._clock()
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - self._window:
            calls.popleft()
        if len(calls) >= self._max:
            retry_after = calls[0] + self._window - now
            raise CallLimited(
                f"tool {key!r} is limited to {self._max} calls per {self._window:g} s",
                retry_after_s=max(retry_after, 0.0),
            )
        calls.append(now)
