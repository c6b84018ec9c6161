"""Incremental parser of Server-Sent Events as streamed by OpenAI-compatible servers.

Wire format (one event per blank-line-terminated block)::

    data: {"choices":[{"delta":{"content":"Hi"}}]}\\n
    \\n
    : comment lines start with a colon\\n
    data: [DONE]\\n
    \\n

Network reads split and merge these blocks arbitrarily, so the parser keeps the
unfinished tail between ``feed`` calls.
"""

from __future__ import annotations

DONE = "[DONE]"  # sentinel payload that ends an OpenAI stream


class SSEParser:
    """Turns text chunks into the ``data`` payloads of complete events.

    Only the ``data`` field matters for OpenAI streams; ``event``, ``id`` and
    ``retry`` fields and comments are ignored. Several ``data`` lines in one
    event are joined with newlines, as the SSE specification says.
    """

    def __init__(self) -> None:
        self._buffer = ""  # text after the last complete line
        self._data: list[str] = []  # data lines of the event being assembled

    def feed(self, text: str) -> list[str]:
        """Consume one network read and return the payloads of events it completed."""
        self._buffer += text
        events: list[str] = []
        while True:
            line, found = self._next_line()
            if not found:
                return events
            payload = self._consume_line(line)
            if payload is not None:
                events.append(payload)

    def flush(self) -> list[str]:
        """End of stream: return a final event that lacked its blank line, if any."""
        # Terminate the last line (a lone trailing \r included), then the event.
        events = self.feed("\n") if self._buffer else []
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _next_line(self) -> tuple[str, bool]:
        """Pop one line ending in \\n, \\r\\n or \\r from the buffer."""
        buf = self._buffer
        lf, cr = buf.find("\n"), buf.find("\r")
        if lf == -1 and cr == -1:
            return "", False
        if cr == -1 or (lf != -1 and lf < cr):
            end = cut = lf
        elif cr + 1 == len(buf):
            return "", False  # a trailing \r may be the first half of \r\n
        else:
            cut = cr
            end = cr + 1 if buf[cr + 1] == "\n" else cr
        self._buffer = buf[end + 1 :]
        return buf[:cut], True

    def _consume_line(self, line: str) -> str | None:
        """Apply one line; return a payload when the line ends an event."""
        if line == "":
            if not self._data:
                return None
            payload = "\n".join(self._data)
            self._data = []
            return payload
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None
