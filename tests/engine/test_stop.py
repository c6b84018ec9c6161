"""StopStringMatcher: stops split anywhere, earliest wins, held text is released."""

from __future__ import annotations

import itertools
import random

import pytest

from vllm_mlx.engine.stop import StopResult, StopStringMatcher


def _run(stops: tuple[str, ...], parts: list[str]) -> tuple[str, str | None]:
    """Feed parts until a stop matches; return (emitted text, matched stop)."""
    matcher = StopStringMatcher(stops)
    out = []
    for part in parts:
        result = matcher.feed(part)
        out.append(result.text)
        if result.stop is not None:
            return "".join(out), result.stop
    out.append(matcher.flush())
    return "".join(out), None


def _splits(text: str, cuts: tuple[int, ...]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def test_no_stops_passes_text_through() -> None:
    matcher = StopStringMatcher(())
    assert matcher.feed("abc") == StopResult("abc")
    assert matcher.feed("") == StopResult("")
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    matcher = StopStringMatcher(("",))
    assert matcher.feed("hello") == StopResult("hello")


def test_stop_in_one_piece() -> None:
    assert StopStringMatcher(("END",)).feed("abcENDxyz") == StopResult("abc", "END")


def test_stop_at_very_start() -> None:
    assert StopStringMatcher(("END",)).feed("ENDabc") == StopResult("", "END")


TEXT = "The answer is 42.\n###\nignored"


@pytest.mark.parametrize("cut", range(1, len(TEXT)))
def test_every_single_split_point(cut: int) -> None:
    assert _run(("###",), _splits(TEXT, (cut,))) == ("The answer is 42.\n", "###")


def test_every_pair_of_split_points() -> None:
    for a, b in itertools.combinations(range(1, len(TEXT)), 2):
        assert _run(("###",), _splits(TEXT, (a, b))) == ("The answer is 42.\n", "###"), (a, b)


def test_one_character_at_a_time() -> None:
    assert _run(("###",), list(TEXT)) == ("The answer is 42.\n", "###")


def test_random_splits_with_several_stops() -> None:
    rng = random.Random(1234)
    stops = ("<|end|>", "STOP", "\n\n")
    text = "alpha <|en beta STO gamma\n delta <|end|> tail STOP"
    for _ in range(500):
        k = rng.randint(0, 8)
        cuts = tuple(sorted(rng.sample(range(1, len(text)), k)))
        assert _run(stops, _splits(text, cuts)) == ("alpha <|en beta STO gamma\n delta ", "<|end|>")


def test_earliest_stop_wins_in_one_feed() -> None:
    result = StopStringMatcher(("world", "lo")).feed("hello world")
    assert result == StopResult("hel", "lo")


def test_earliest_stop_wins_across_feeds() -> None:
    assert _run(("xyz", "b"), ["aaxy", "zb"]) == ("aa", "xyz")
    assert _run(("xyz", "b"), ["aab", "xyz"]) == ("aa", "b")


def test_prefix_that_is_not_a_stop_is_released() -> None:
    matcher = StopStringMatcher(("</answer>",))
    first = matcher.feed("text </ans")
    assert first == StopResult("text ")  # "</ans" might become the stop: held
    second = matcher.feed("wer-not>")
    assert second.stop is None
    assert first.text + second.text + matcher.flush() == "text </answer-not>"


def test_only_the_longest_possible_stop_prefix_is_held() -> None:
    # Only the longest suffix that can start a stop is held, not more.
    matcher = StopStringMatcher(("abc",))
    assert matcher.feed("xxab") == StopResult("xx")
    assert matcher.feed("ab") == StopResult("ab")  # "abab": the first "ab" can go
    assert matcher.flush() == "ab"


def test_overlapping_repeat_is_found() -> None:
    assert _run(("aab",), ["a", "a", "a", "b"]) == ("a", "aab")


def test_flush_releases_held_text_once() -> None:
    matcher = StopStringMatcher(("STOP",))
    assert matcher.feed("go ST") == StopResult("go ")
    assert matcher.flush() == "ST"
    assert matcher.flush() == ""


def test_text_without_any_stop_comes_back_whole() -> None:
    text = "nothing to see here, S T O P"
    for size in (1, 2, 3, 7):
        parts = [text[i : i + size] for i in range(0, len(text), size)]
        assert _run(("STOP",), parts) == (text, None)


def test_unicode_stop_split_mid_string() -> None:
    assert _run(("🙂 fin",), ["ok 🙂", " f", "in more"]) == ("ok ", "🙂 fin")
