"""Region scanning shared by the tool-call families: markers, brackets, tags."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

Memo = dict[tuple[Any, ...], Any]  # resumable scan state, cleared when a region closes


class Markers:
    """Finds the earliest full marker in a text, or where a partial one may begin."""

    def __init__(self, markers: Sequence[str]) -> None:
        for a in markers:
            for b in markers:
                if a != b and a in b:
                    raise ValueError(f"marker {a!r} is contained in {b!r}")
        self.markers = tuple(markers)
        self.reach = max((len(m) for m in markers), default=1) - 1
        # A marker, and a text tail that is a proper prefix of one ("<to" of "<tool_call>").
        self._full = re.compile("|".join(map(re.escape, markers)) or "(?!)")
        self._partial = re.compile("|".join(_prefix_pattern(m[:-1]) for m in markers) or "(?!)")

    def find(self, text: str) -> tuple[int, str | None]:
        """``(pos, marker)`` of the earliest full marker, else ``(hold, None)``.

        ``hold`` is where a suffix that could still grow into a marker begins
        (``len(text)`` if none). No marker contains another, so a full marker never
        hides behind a partial one.
        """
        m = self._full.search(text)
        if m is not None:
            return m.start(), m.group()
        p = self._partial.search(text, max(0, len(text) - self.reach))
        return (len(text), None) if p is None else (p.start(), None)


def _prefix_pattern(text: str) -> str:
    """Regex for any non-empty prefix of ``text`` at the end of the input."""
    pattern = ""
    for ch in reversed(text):
        pattern = f"{re.escape(ch)}(?:{pattern})?" if pattern else re.escape(ch)
    return f"(?:{pattern})\\Z"


@cache
def markers_for(markers: tuple[str, ...]) -> Markers:
    return Markers(markers)


def skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def bracket_end(text: str, start: int, memo: Memo, quotes: str = '"') -> int | None:
    """Index just past the ``{...}``/``[...]`` opening at ``text[start]``; None while open.

    Strings (delimited by ``quotes``) are skipped. Progress is kept in ``memo`` so a
    text that keeps growing is scanned once overall.
    """
    key = ("bracket", start, quotes)
    pos, depth, quote, escaped = memo.get(key, (start, 0, "", False))
    while pos < len(text):
        ch = text[pos]
        pos += 1
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in quotes:
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return pos
    memo[key] = (pos, depth, quote, escaped)
    return None


def find_from(text: str, needle: str, start: int, memo: Memo) -> int:
    """``text.find(needle, start)`` that does not rescan text it already searched."""
    key = ("find", needle, start)
    i = text.find(needle, memo.get(key, start))
    if i < 0:
        memo[key] = max(start, len(text) - len(needle) + 1)
    return i


def tag_end(text: str, opener: str, closer: str, final: bool, memo: Memo) -> int | None:
    """End of ``opener…closer``; at the end of the stream an unclosed one runs to the end."""
    i = find_from(text, closer, len(opener), memo)
    if i >= 0:
        return i + len(closer)
    return len(text) if final else None


def json_tag_end(text: str, opener: str, closer: str, final: bool, memo: Memo) -> int | None:
    """Like ``tag_end``, but a JSON body is skipped whole (``closer`` may sit in a string)."""
    start = skip_ws(text, len(opener))
    if start == len(text):
        return len(text) if final else None
    if text[start] not in "{[":
        return tag_end(text, opener, closer, final, memo)
    end = bracket_end(text, start, memo)
    i = -1 if end is None else find_from(text, closer, end, memo)
    if i >= 0:
        return i + len(closer)
    return len(text) if final else None


def tag_body(region: str, opener: str, closer: str) -> str:
    """The text between ``opener`` and ``closer`` (the closer may be missing)."""
    body = region[len(opener) :]
    return body[: -len(closer)] if body.endswith(closer) else body
