"""Stop strings that may span tokens and are never emitted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StopResult:
    text: str  # text now safe to emit
    stop: str | None = None  # the stop string that matched, ending generation


class StopStringMatcher:
    """Buffers just enough text to recognise a stop string split across deltas."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> StopResult:
        if not self._stops:
            return StopResult(text)
        buf = self._held + text
        first: tuple[int, str] | None = None
        for stop in self._stops:
            idx = buf.find(stop)
            if idx != -1 and (first is None or idx < first[0]):
                first = (idx, stop)
        if first is not None:
            self._held = ""
            return StopResult(buf[: first[0]], first[1])
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return StopResult(buf[: len(buf) - keep])

    def flush(self) -> str:
        """Release held text when generation ends for another reason."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of buf that starts some stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if stop.startswith(buf[-n:]):
                    best = n
                    break
        return best
