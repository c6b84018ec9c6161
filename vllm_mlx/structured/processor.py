"""A per-request logits processor that masks every token the grammar forbids.

Each step the matcher (llguidance, CPU) writes the allowed tokens as a bitmask of
int32 words, bit ``i % 32`` of word ``i // 32`` for token ``i``::

    word 0: tokens 0..31 (bit 0 = token 0)   word 1: tokens 32..63   ...

numpy unpacks the words into one bool per model token, and ``mx.where`` puts
``-inf`` on the forbidden logits. Plain MLX ops run on every device (llguidance's
own MLX helper is a Metal-only kernel); on a 2-core CPU, unpacking in numpy took
about half the time of unpacking with MLX shifts (see scripts/measure_constraints.py).
Only the engine thread calls the processor, so all MLX work stays there; this
module does not import mlx at load time, because OpenBLAS must be preloaded first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from vllm_mlx.engine.types import LogitsProcessor, LogitsProcessorFactory
from vllm_mlx.structured.grammar import CompiledGrammar

if TYPE_CHECKING:
    import mlx.core as mx

log = logging.getLogger(__name__)


def constraint_factory(
    grammar: CompiledGrammar, vocab_size: int, eos_token_ids: Iterable[int]
) -> LogitsProcessorFactory:
    """A factory of fresh :class:`GrammarConstraint` processors, one per request.

    ``vocab_size`` is the model's logits width (config ``vocab_size``); it may
    differ from the tokenizer's, and ids the tokenizer lacks are always masked
    out. Each call masks logits of the width it is given. ``eos_token_ids`` end a
    request; they are allowed only where the grammar accepts.
    """
    eos = tuple(sorted({int(t) for t in eos_token_ids}))
    if not eos:
        raise ValueError("a grammar constraint needs at least one EOS token id")
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")

    def make() -> LogitsProcessor:
        return GrammarConstraint(grammar, eos)

    return make


class GrammarConstraint:
    """Logits processor for one request; call it with the full generated history.

    It feeds the matcher only the tokens it has not seen yet, then masks the
    logits to what may come next. EOS is allowed where the grammar accepts and is
    the only choice once the grammar is complete. A token the grammar rejects
    (which the mask should make impossible) is logged and leaves EOS as the only
    choice, so the request ends instead of the engine failing.
    """

    def __init__(self, grammar: CompiledGrammar, eos: tuple[int, ...]) -> None:
        self._grammar = grammar
        self._matcher = grammar.new_matcher()
        self._tokenizer_vocab = grammar.tokenizer.vocab_size
        self._eos = eos
        self._consumed = 0  # history tokens already fed to the matcher
        self._failed = False
        self._ended = False  # EOS was generated (only ignore_eos goes on after it)

    @property
    def failed(self) -> bool:
        """A generated token broke the grammar; only EOS is allowed from then on."""
        return self._failed

    @property
    def complete(self) -> bool:
        """The grammar is satisfied and accepts no further token but EOS."""
        return not self._failed and (self._ended or self._matcher.is_stopped())

    def __call__(self, history: list[int], logits: mx.array) -> mx.array:
        self._advance(history)
        vocab = logits.shape[-1]
        if self._failed or self.complete:
            return _apply(logits, self._eos_only(vocab))
        allowed = self._allowed(vocab)
        if not allowed.any():  # e.g. the next token only exists beyond the model's vocab
            log.warning("grammar allows no token the model has; ending the request")
            self._failed = True
            allowed = self._eos_only(vocab)
        return _apply(logits, allowed)

    def _advance(self, history: list[int]) -> None:
        new = history[self._consumed :]
        self._consumed = len(history)
        for token in new:
            if self._failed or self.complete:
                return
            if token in self._eos and self._matcher.is_accepting():
                self._ended = True
                return
            if not 0 <= token < self._tokenizer_vocab or not self._matcher.consume_token(token):
                log.warning(
                    "token %d rejected by the %s grammar: %s",
                    token,
                    self._grammar.kind,
                    self._matcher.get_error() or "out of the tokenizer's range",
                )
                self._failed = True
                return

    def _allowed(self, vocab: int) -> np.ndarray:
        words = np.zeros(_num_words(self._tokenizer_vocab), dtype=np.int32)
        self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        # Little-endian bytes, little bit order: flat bit i is token i.
        bits = np.unpackbits(words.astype("<i4").view(np.uint8), bitorder="little")
        allowed = np.zeros(vocab, dtype=np.bool_)
        shared = min(vocab, self._tokenizer_vocab)  # ids past the tokenizer stay masked
        allowed[:shared] = bits[:shared]
        _set(allowed, self._eos, self._matcher.is_accepting())
        return allowed

    def _eos_only(self, vocab: int) -> np.ndarray:
        allowed = np.zeros(vocab, dtype=np.bool_)
        _set(allowed, self._eos, True)
        return allowed


def _num_words(n_tokens: int) -> int:
    return (n_tokens + 31) // 32


def _set(allowed: np.ndarray, ids: tuple[int, ...], value: bool) -> None:
    for token in ids:
        if 0 <= token < allowed.size:
            allowed[token] = value


def _apply(logits: mx.array, allowed: np.ndarray) -> mx.array:
    """Keep the allowed logits; the rest become -inf."""
    import mlx.core as mx  # here, not at import: the API layer imports this module early

    return mx.where(mx.array(allowed), logits, mx.array(float("-inf"), dtype=logits.dtype))
