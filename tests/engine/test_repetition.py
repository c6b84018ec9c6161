"""The loop detector: each mode's triggers, their labels, and no false alarms."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from vllm_mlx.config import RepetitionPolicy
from vllm_mlx.engine.repetition import RepetitionDetector, detector_for

SAFE, STRICT, OFF = RepetitionPolicy.SAFE, RepetitionPolicy.STRICT, RepetitionPolicy.OFF


def _first_trigger(mode: RepetitionPolicy, tokens: Sequence[int]) -> tuple[int, str] | None:
    """(1-based position, label) of the first trigger, or None."""
    detector = detector_for(mode)
    assert detector is not None
    for position, token in enumerate(tokens, start=1):
        label = detector.feed(token)
        if label is not None:
            return position, label
    return None


def _loop(pattern: Sequence[int], copies: int, lead: Sequence[int] = (90, 91, 92)) -> list[int]:
    return [*lead, *(list(pattern) * copies)]


LEAD = 3  # tokens of _loop's default lead-in


@pytest.mark.parametrize(("mode", "run"), [(SAFE, 8), (STRICT, 4)])
def test_a_token_run_triggers_at_its_length(mode: RepetitionPolicy, run: int) -> None:
    assert _first_trigger(mode, _loop([5], run - 1)) is None
    assert _first_trigger(mode, _loop([5], run)) == (LEAD + run, f"token_run_len_{run}")


@pytest.mark.parametrize("period", [2, 3, 4])
def test_safe_pattern_needs_six_copies(period: int) -> None:
    pattern = list(range(10, 10 + period))
    assert _first_trigger(SAFE, _loop(pattern, 6)[:-1]) is None  # one token short
    assert _first_trigger(SAFE, _loop(pattern, 6)) == (
        LEAD + 6 * period,
        f"pattern_loop_len_{period}",
    )


@pytest.mark.parametrize("period", [2, 3, 4, 5, 6])
def test_strict_pattern_needs_four_copies(period: int) -> None:
    pattern = list(range(10, 10 + period))
    assert _first_trigger(STRICT, _loop(pattern, 4)[:-1]) is None
    assert _first_trigger(STRICT, _loop(pattern, 4)) == (
        LEAD + 4 * period,
        f"pattern_loop_len_{period}",
    )


def test_safe_ignores_patterns_longer_than_four() -> None:
    assert _first_trigger(SAFE, _loop([1, 2, 3, 4, 5], 20)) is None
    assert _first_trigger(STRICT, _loop([1, 2, 3, 4, 5], 20)) == (LEAD + 20, "pattern_loop_len_5")


def test_a_pattern_with_a_run_inside_is_named_by_its_period() -> None:
    # "7 7 7 8" holds a run of 3: below both run lengths, so only the pattern counts.
    assert _first_trigger(STRICT, _loop([7, 7, 7, 8], 4)) == (LEAD + 16, "pattern_loop_len_4")
    assert _first_trigger(SAFE, _loop([7, 7, 7, 8], 6)) == (LEAD + 24, "pattern_loop_len_4")


def test_a_repeated_pair_is_named_by_its_shortest_period() -> None:
    # "3 4 3 4" repeated is also a 4-token pattern; the 2-token loop completes first.
    assert _first_trigger(STRICT, _loop([3, 4, 3, 4], 4)) == (LEAD + 8, "pattern_loop_len_2")


def test_a_broken_loop_starts_counting_again() -> None:
    almost = [*([5] * 7), 6, *([5] * 7)]  # two runs of 7 with one other token between
    assert _first_trigger(SAFE, almost) is None
    assert _first_trigger(SAFE, [*almost, 5]) == (16, "token_run_len_8")
    pairs = [*([1, 2] * 5), 9, *([1, 2] * 5)]  # five copies, a break, five copies
    assert _first_trigger(SAFE, pairs) is None


def test_off_never_triggers() -> None:
    assert detector_for(OFF) is None


def test_detectors_are_per_sequence() -> None:
    first, second = detector_for(STRICT), detector_for(STRICT)
    assert isinstance(first, RepetitionDetector) and first is not second
    assert first is not None and second is not None
    for token in (5, 5, 5):
        assert first.feed(token) is None
    assert second.feed(5) is None  # the other sequence's run does not count here
    assert first.feed(5) == "token_run_len_4"


# Varied text, as token ids: words reused often, as in prose, but never looping.
PROSE = (
    "the old fisherman rowed out beyond the reef every morning and came home every evening "
    "with a story about the sea the storm the boats and the village where he lived with his "
    "wife who listened to the story and laughed at the parts she had heard before"
)


@pytest.mark.parametrize("mode", [SAFE, STRICT])
def test_varied_text_never_triggers(mode: RepetitionPolicy) -> None:
    words = PROSE.split()
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    assert _first_trigger(mode, [vocab[w] for w in words]) is None
    rng = random.Random(0)
    sampled = [rng.randrange(100) for _ in range(5000)]  # a small vocabulary, long output
    assert _first_trigger(mode, sampled) is None
