"""IncrementalDetokenizer: deltas add up to the full decode and never split a character."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tests.fixtures.tiny_models import SPECIAL_TOKENS, training_corpus
from vllm_mlx.engine.detokenize import IncrementalDetokenizer

REPLACEMENT = "\ufffd"

TEXTS = [
    "Hello 🙂 world 🚀🎉!",
    "日本語のテキスト。中文文本。한국어 텍스트",
    "Café naïve résumé Ångström Kraków",
    "family 👩‍👩‍👧 clef 𝄞 flag 🇫🇷 digraph ǅ",
    "mixed: a🙂b日c é ∑∫√ ≤≥",
]


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    """A byte-level BPE small enough that non-ASCII text splits into byte tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return tokenizer


def _decoder(tok: Tokenizer):
    def decode(ids: Sequence[int]) -> str:
        return tok.decode(list(ids), skip_special_tokens=True)

    return decode


def _stream(detok: IncrementalDetokenizer, ids: Sequence[int]) -> list[str]:
    return [detok.add(i) for i in ids] + [detok.flush()]


def test_fixture_really_splits_characters(bpe: Tokenizer) -> None:
    # Guard: the cases below only mean something if single tokens decode to U+FFFD.
    ids = bpe.encode(TEXTS[0]).ids
    assert any(REPLACEMENT in bpe.decode([i]) for i in ids)


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_concatenate_to_full_decode(bpe: Tokenizer, text: str) -> None:
    ids = bpe.encode(text).ids
    deltas = _stream(IncrementalDetokenizer(_decoder(bpe)), ids)
    assert "".join(deltas) == text
    assert all(REPLACEMENT not in d for d in deltas)


@pytest.mark.parametrize("text", TEXTS)
def test_each_delta_is_final_text(bpe: Tokenizer, text: str) -> None:
    # What has been emitted after token i is always a prefix of the final text.
    detok = IncrementalDetokenizer(_decoder(bpe))
    emitted = ""
    for token_id in bpe.encode(text).ids:
        emitted += detok.add(token_id)
        assert text.startswith(emitted)
    assert emitted + detok.flush() == text


def test_with_prompt_context(bpe: Tokenizer) -> None:
    prompt = bpe.encode("Grüße aus München! ").ids
    output = "Ça va très bien 🙂 merci"
    detok = IncrementalDetokenizer(_decoder(bpe), prompt)
    deltas = _stream(detok, bpe.encode(output).ids)
    assert "".join(deltas) == output
    assert all(REPLACEMENT not in d for d in deltas)


def test_prompt_context_that_starts_mid_character(bpe: Tokenizer) -> None:
    # The 4-token prompt window may cut an emoji in half; output must still be exact.
    prompt = bpe.encode("🚀🎉🙂").ids
    assert bpe.decode(prompt[-4:]).startswith(REPLACEMENT)
    detok = IncrementalDetokenizer(_decoder(bpe), prompt)
    assert "".join(_stream(detok, bpe.encode(" ok 日本").ids)) == " ok 日本"


def test_special_tokens_emit_nothing(bpe: Tokenizer) -> None:
    eos = bpe.token_to_id(SPECIAL_TOKENS[2])
    detok = IncrementalDetokenizer(_decoder(bpe))
    ids = bpe.encode("Hello").ids
    assert "".join(detok.add(i) for i in ids) == "Hello"
    assert detok.add(eos) == ""
    assert detok.flush() == ""


def test_incomplete_character_is_held_then_flushed_as_replacement(bpe: Tokenizer) -> None:
    ids = bpe.encode("ab🚀").ids
    decode = _decoder(bpe)
    # Drop the last byte token so the rocket never completes.
    cut = ids[:-1]
    assert decode(cut).endswith(REPLACEMENT)
    detok = IncrementalDetokenizer(decode)
    emitted = "".join(detok.add(i) for i in cut)
    assert emitted == "ab"
    assert detok.flush() == REPLACEMENT
    assert detok.flush() == ""  # flushing twice releases nothing new


def test_flush_after_everything_emitted_is_empty(bpe: Tokenizer) -> None:
    detok = IncrementalDetokenizer(_decoder(bpe))
    for token_id in bpe.encode("plain text").ids:
        detok.add(token_id)
    assert detok.flush() == ""


def test_add_after_flush_continues(bpe: Tokenizer) -> None:
    detok = IncrementalDetokenizer(_decoder(bpe))
    first, second = bpe.encode("one ").ids, bpe.encode("two 🙂").ids
    out = "".join(detok.add(i) for i in first) + detok.flush()
    out += "".join(detok.add(i) for i in second) + detok.flush()
    assert out == "one two 🙂"


# -- SentencePiece-like decoding: "▁" marks a space that is dropped at the start ----

SP_VOCAB = ["▁Hello", "▁world", ",", "▁how", "▁are", "▁you", "?", "▁I", "'m", "▁fine"]


def _sp_decode(ids: Sequence[int]) -> str:
    return "".join(SP_VOCAB[i] for i in ids).replace("▁", " ").removeprefix(" ")


def test_sentencepiece_leading_space_is_kept_between_tokens() -> None:
    ids = [0, 1, 2, 3, 4, 5, 6]
    detok = IncrementalDetokenizer(_sp_decode)
    deltas = _stream(detok, ids)
    assert deltas[:7] == ["Hello", " world", ",", " how", " are", " you", "?"]
    assert "".join(deltas) == _sp_decode(ids)


def test_sentencepiece_first_output_token_keeps_space_after_prompt() -> None:
    # Decoding the first output token alone would lose its space; the prompt window keeps it.
    detok = IncrementalDetokenizer(_sp_decode, prompt_ids=[0, 1, 2, 3, 4, 5, 6])
    deltas = _stream(detok, [7, 8, 9])
    assert deltas == [" I", "'m", " fine", ""]


def test_without_prompt_first_token_matches_plain_decode() -> None:
    detok = IncrementalDetokenizer(_sp_decode)
    assert detok.add(7) == "I"
