"""Stops a sequence that has fallen into a loop, checked per token like a stop string.

For every period K it watches, the detector counts how many tokens in a row equal
the token K places before them. A count of ``K * (repeats - 1)`` means the last
``K * repeats`` tokens are one K-token pattern written ``repeats`` times::

    ... 17 4 9 4 9 4 9 4 9 4 9 4 9    safe: pattern_loop_len_2 (6 copies of "4 9")
    ... 5 5 5 5 5 5 5 5               safe: token_run_len_8 (period 1)

That is one comparison per watched period for each token, over a window of the
last few tokens. A shorter period always completes first (it needs fewer
tokens), so a label names the loop's own pattern length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from vllm_mlx.config import RepetitionPolicy


@dataclass(frozen=True)
class LoopRule:
    """What counts as a loop in one mode."""

    run: int  # identical tokens in a row
    periods: range  # pattern lengths watched (2 and up), shortest first
    repeats: int  # back-to-back copies of one pattern


RULES: dict[RepetitionPolicy, LoopRule] = {
    RepetitionPolicy.SAFE: LoopRule(run=8, periods=range(2, 5), repeats=6),
    RepetitionPolicy.STRICT: LoopRule(run=4, periods=range(2, 7), repeats=4),
}
INTERVENING_MODES = tuple(mode.value for mode in RULES)  # the modes that can stop a sequence


class RepetitionDetector:
    """Watches one sequence's generated tokens; ``feed`` names a loop once it completes."""

    def __init__(self, rule: LoopRule) -> None:
        self._rule = rule
        longest = max(rule.periods, default=1)
        self._recent: deque[int] = deque(maxlen=longest)
        self._matches = [0] * (longest + 1)  # [K]: tokens in a row equal to the one K back

    def feed(self, token: int) -> str | None:
        """Take the next generated token; the trigger label if it completes a loop."""
        recent, matches = self._recent, self._matches
        for k in range(1, len(matches)):
            matches[k] = matches[k] + 1 if k <= len(recent) and recent[-k] == token else 0
        recent.append(token)
        rule = self._rule
        if matches[1] >= rule.run - 1:
            return f"token_run_len_{rule.run}"
        for k in rule.periods:
            if matches[k] >= k * (rule.repeats - 1):
                return f"pattern_loop_len_{k}"
        return None


def detector_for(mode: RepetitionPolicy) -> RepetitionDetector | None:
    """A fresh detector for one sequence, or None when ``mode`` never intervenes."""
    rule = RULES.get(mode)
    return RepetitionDetector(rule) if rule is not None else None
