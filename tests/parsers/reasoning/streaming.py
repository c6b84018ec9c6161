"""Helpers that stream an output through a parser under many chunkings."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from vllm_mlx.parsers.reasoning.base import ReasoningDelta, ReasoningParser, ReasoningResult

TAGS = ("<think>", "</think>")


@dataclass(frozen=True)
class Case:
    """One model output with the split every parsing path must agree on."""

    id: str
    prompt: str | None  # rendered prompt, or None when the caller does not pass it
    output: str  # the model's raw text
    reasoning: str | None
    content: str


def stream(
    parser: ReasoningParser, chunks: list[str], end_after: int | None = None
) -> list[ReasoningDelta]:
    """Feed chunks then finish; call end_reasoning() after chunk end_after (-1: before any)."""
    if end_after == -1:
        parser.end_reasoning()
    deltas = []
    for i, chunk in enumerate(chunks):
        deltas.append(parser.feed(chunk))
        if i == end_after:
            parser.end_reasoning()
    deltas.append(parser.finish())
    return deltas


def joined(deltas: list[ReasoningDelta]) -> ReasoningResult:
    reasoning = "".join(d.reasoning for d in deltas)
    return ReasoningResult(reasoning or None, "".join(d.content for d in deltas))


def assert_well_formed(deltas: list[ReasoningDelta]) -> None:
    """No tag in any delta, and no reasoning once content has begun."""
    content_seen = False
    for delta in deltas:
        for tag in TAGS:
            assert tag not in delta.reasoning, (tag, deltas)
            assert tag not in delta.content, (tag, deltas)
        assert not (content_seen and delta.reasoning), deltas
        content_seen = content_seen or bool(delta.content)


def splits(text: str, cuts: tuple[int, ...]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def one_and_two_cut_splits(text: str) -> Iterator[list[str]]:
    """Every way to cut text once or twice (empty pieces included)."""
    positions = range(len(text) + 1)
    for cut in positions:
        yield splits(text, (cut,))
    for cuts in itertools.combinations_with_replacement(positions, 2):
        yield splits(text, cuts)


def random_chunkings(text: str, seed: int, count: int = 50) -> Iterator[list[str]]:
    """Seeded random chunkings, pieces of 0 to 8 characters."""
    rng = random.Random(seed)
    for _ in range(count):
        cuts, pos = [], 0
        while pos < len(text):
            pos = min(len(text), pos + rng.randint(0, 8))
            cuts.append(pos)
        yield splits(text, tuple(cuts))


def check_case(parser_cls: type[ReasoningParser], case: Case) -> None:
    """parse() gives the expected split; every chunking streams to the same split."""
    assert parser_cls(case.prompt).parse(case.output) == ReasoningResult(
        case.reasoning, case.content
    )
    expected = ReasoningResult(case.reasoning, case.content)
    chunkings = itertools.chain(
        [[case.output], list(case.output)],
        one_and_two_cut_splits(case.output),
        *(random_chunkings(case.output, seed) for seed in range(4)),
    )
    for chunks in chunkings:
        deltas = stream(parser_cls(case.prompt), chunks)
        assert joined(deltas) == expected, chunks
        assert_well_formed(deltas)
