"""Incremental detokenization that never emits a split multi-byte character."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]

_REPLACEMENT = "\ufffd"
# Prompt tokens decoded with the first output token, so that tokenizers which drop
# a leading space when decoding from a word start (SentencePiece) still get it right.
_PROMPT_CONTEXT = 4


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas.

    Decodes a small window of recent tokens twice, with and without the newest
    ones, and emits the difference once it no longer ends in U+FFFD (a multi-byte
    character still waiting for its remaining bytes).
    """

    def __init__(self, decode: Decode, prompt_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = list(prompt_ids[-_PROMPT_CONTEXT:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def add(self, token_id: int) -> str:
        """Append one token and return the text that became final."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) <= len(prefix) or full.endswith(_REPLACEMENT):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full[len(prefix) :]

    def flush(self) -> str:
        """Text still held back at the end (an incomplete character stays U+FFFD)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :] if len(full) > len(prefix) else ""
