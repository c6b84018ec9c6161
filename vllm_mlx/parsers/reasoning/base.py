"""Split a reasoning model's output into its think block and its answer.

A reasoning model writes its chain of thought between two tags, then the answer::

    <think>
    17 × 20 = 340 and 17 × 3 = 51, so 391.
    </think>

    17 × 23 = 391.

gives reasoning ``"17 × 20 = 340 and 17 × 3 = 51, so 391."`` and content
``"17 × 23 = 391."``. Families differ only in their tags and in where the output
starts when the rendered prompt does not say; the state machine lives here.

Rules shared by every family:

- Tags never reach the caller. While streaming, a suffix that may be the start of a
  tag is held back until the next chunk settles it.
- Reasoning is returned without its surrounding whitespace, and the whitespace
  right after the close tag (the ``"\\n\\n"``) is not content.
- When the output ends inside the block (max tokens), everything produced is
  reasoning and content is ``""``.
- After the close tag the content is passed through verbatim: a later
  ``</think>`` in the answer is the model's text, not a tag.
- After :meth:`ReasoningParser.end_reasoning` the rest of the thinking is content.
  The model does not know it was cut off and still writes its own ``</think>``:
  that one tag is dropped and the whitespace around it is kept, so the overflow
  and the answer stay apart as the model spaced them.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from enum import Enum, auto
from typing import ClassVar


@dataclass(frozen=True)
class ReasoningResult:
    """A whole output, split (non-streaming)."""

    reasoning: str | None  # the think block's text, stripped; None if absent or empty
    content: str  # the answer; "" when the output ended inside the think block


@dataclass(frozen=True)
class ReasoningDelta:
    """The text one ``feed()`` or ``finish()`` call releases (streaming)."""

    reasoning: str = ""  # new reasoning text, never a tag
    content: str = ""  # new answer text, never a tag


class _Phase(Enum):
    MAYBE_OPEN = auto()  # nothing decided: an open tag (after whitespace) starts reasoning
    OPENED = auto()  # inside the block before its first text: skip whitespace, one open tag
    REASONING = auto()  # inside the block
    CLOSED = auto()  # right after the close tag: skip whitespace
    CONTENT = auto()  # the answer, verbatim
    OVERFLOW = auto()  # after end_reasoning(): thinking is content, drop the model's close tag


class ReasoningParser(ABC):
    """Separates reasoning from content for one request; build a fresh one per request.

    ``prompt_text`` is the rendered prompt. A prompt ending with an open tag means
    the output starts inside the block; one ending with a close tag (thinking
    switched off by the template) means the output is all content. Otherwise the
    family's ``starts_in_reasoning`` decides. :meth:`parse` is for a whole output
    and leaves the streaming state alone; :meth:`feed` / :meth:`finish` stream.
    """

    name: ClassVar[str]  # registry name, e.g. "qwen3"
    starts_in_reasoning: ClassVar[bool]  # output assumed inside the block when the prompt is silent
    start_tag: ClassVar[str] = "<think>"
    end_tag: ClassVar[str] = "</think>"

    def __init__(self, prompt_text: str | None = None) -> None:
        self._initial = self._initial_phase(prompt_text)
        self._phase = self._initial
        self._held = ""  # received but not yet released: whitespace or a possible tag
        self._open_tag_allowed = True  # OPENED may still skip one open tag
        self._forced = False  # end_reasoning() was called
        self._content_started = False
        self._reasoning_out: list[str] = []
        self._content_out: list[str] = []

    @property
    def in_reasoning(self) -> bool:
        """True while the output is inside the think block and not cut off."""
        return not self._forced and self._phase in (_Phase.OPENED, _Phase.REASONING)

    def parse(self, text: str) -> ReasoningResult:
        """Split a complete output."""
        if self._initial is _Phase.CONTENT:
            return ReasoningResult(None, text)
        body = text.lstrip()
        if body.startswith(self.start_tag):
            body = body[len(self.start_tag) :]
        elif self._initial is _Phase.MAYBE_OPEN:
            return ReasoningResult(None, text)
        reasoning, closed, rest = body.partition(self.end_tag)
        return ReasoningResult(reasoning.strip() or None, rest.lstrip() if closed else "")

    def feed(self, text: str) -> ReasoningDelta:
        """Take the next piece of output; return what is now safe to release."""
        self._held += text
        while self._step():
            pass
        return self._drain()

    def finish(self) -> ReasoningDelta:
        """The output has ended: release whatever was held back."""
        held, self._held = self._held, ""
        if self._phase in (_Phase.OPENED, _Phase.REASONING) and not self._forced:
            self._emit_reasoning(held.rstrip())
        else:
            self._emit_content(held)
        return self._drain()

    def end_reasoning(self) -> None:
        """Route the rest of the thinking to content (``--max-thinking-tokens``)."""
        self._forced = True
        if self._phase is _Phase.REASONING:
            self._phase = _Phase.OVERFLOW

    def _initial_phase(self, prompt_text: str | None) -> _Phase:
        tail = (prompt_text or "").rstrip()
        if tail.endswith(self.start_tag):
            return _Phase.OPENED
        if tail.endswith(self.end_tag):
            return _Phase.CONTENT
        return _Phase.OPENED if self.starts_in_reasoning else _Phase.MAYBE_OPEN

    def _step(self) -> bool:
        """Advance on the held text; True when the phase changed and text may remain."""
        match self._phase:
            case _Phase.MAYBE_OPEN:
                return self._step_maybe_open()
            case _Phase.OPENED:
                return self._step_opened()
            case _Phase.REASONING:
                return self._step_reasoning()
            case _Phase.CLOSED:
                return self._step_closed()
            case _Phase.OVERFLOW:
                return self._step_overflow()
            case _Phase.CONTENT:
                self._emit_content(self._held)
                self._held = ""
                return False

    def _step_maybe_open(self) -> bool:
        head = self._held.lstrip()
        if _is_proper_prefix(head, self.start_tag):
            return False
        if head.startswith(self.start_tag):
            self._held = head[len(self.start_tag) :]
            self._open_tag_allowed = False
            self._phase = _Phase.OPENED
        else:
            self._phase = _Phase.CONTENT  # no block: the output, whitespace and all, is content
        return True

    def _step_opened(self) -> bool:
        head = self._held = self._held.lstrip()
        if self._open_tag_allowed:
            if _is_proper_prefix(head, self.start_tag):
                return False
            if head.startswith(self.start_tag):  # the prompt opened it and the model did too
                self._held = head[len(self.start_tag) :]
                self._open_tag_allowed = False
                return True
        elif not head:
            return False
        self._phase = _Phase.OVERFLOW if self._forced else _Phase.REASONING
        return True

    def _step_reasoning(self) -> bool:
        before, closed, after = self._held.partition(self.end_tag)
        if closed:
            self._emit_reasoning(before.rstrip())
            self._held = after
            self._phase = _Phase.CLOSED
            return True
        keep = _partial_suffix_len(self._held, self.end_tag)
        safe = self._held[: len(self._held) - keep].rstrip()  # hold trailing whitespace too
        self._emit_reasoning(safe)
        self._held = self._held[len(safe) :]
        return False

    def _step_closed(self) -> bool:
        self._held = self._held.lstrip()
        if not self._held:
            return False
        self._phase = _Phase.CONTENT
        return True

    def _step_overflow(self) -> bool:
        if not self._content_started:
            self._held = self._held.lstrip()
        before, closed, after = self._held.partition(self.end_tag)
        if closed:
            self._emit_content(before)
            self._held = after
            # Nothing overflowed yet: behave as a normal close and skip the whitespace.
            self._phase = _Phase.CONTENT if self._content_started else _Phase.CLOSED
            return True
        cut = len(self._held) - _partial_suffix_len(self._held, self.end_tag)
        self._emit_content(self._held[:cut])
        self._held = self._held[cut:]
        return False

    def _emit_reasoning(self, text: str) -> None:
        if text:
            self._reasoning_out.append(text)

    def _emit_content(self, text: str) -> None:
        if text:
            self._content_out.append(text)
            self._content_started = True

    def _drain(self) -> ReasoningDelta:
        delta = ReasoningDelta("".join(self._reasoning_out), "".join(self._content_out))
        self._reasoning_out.clear()
        self._content_out.clear()
        return delta


def _is_proper_prefix(text: str, tag: str) -> bool:
    """True if text (possibly empty) could still grow into tag."""
    return len(text) < len(tag) and tag.startswith(text)


def _partial_suffix_len(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
