"""Deterministic synthetic prompts of roughly a given token length.

Prompts are random sequences of common English words. Such words are one token
each (with their leading space) in the BPE vocabularies of common models, so
the word count approximates the token count; the server's
``usage.prompt_tokens`` reports the real figure.
"""

from __future__ import annotations

import random

# Short, frequent words: one BPE token each in Llama/SmolLM/Qwen vocabularies.
_WORD_TEXT = """
    the of and to in is that for it as was with be by on not he this are or his
    from at which but have an they you were her she there one all we their been
    has when who will more no if out so said what up its about into than them
    can only other new some could time these two may then do first any my now
    such like our over man me even most made after also did many before must
    through back years where much your way well down should because each just
    those people how too little state good very make world still own see men
    work long get here between both life being under never day same another
    know while last might us great old year off come since against go came
    right used take three water house small light river green table stone
    garden music story city paper morning night market window winter summer
    """
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())

TOKENS_PER_WORD = 1.0  # every word is one token in SmolLM2's vocabulary; the template adds more


def words_for_tokens(prompt_tokens: int) -> int:
    """Number of synthetic words that approximate ``prompt_tokens`` tokens."""
    return max(1, round(prompt_tokens / TOKENS_PER_WORD))


def make_prompts(count: int, prompt_tokens: int, seed: int, salt: str = "") -> list[str]:
    """Return ``count`` prompts of about ``prompt_tokens`` tokens each.

    The same (count, prompt_tokens, seed, salt) always gives the same prompts;
    a different ``salt`` gives an unrelated set (so that warmup and each
    concurrency level do not hit the server's prefix cache with each other's
    prompts).
    """
    # A str seed is hashed with SHA-512 by `random`, so it is stable across runs.
    rng = random.Random(f"vllm-mlx-bench:{seed}:{salt}")
    n_words = words_for_tokens(prompt_tokens)
    return [_one_prompt(rng, n_words) for _ in range(count)]


def _one_prompt(rng: random.Random, n_words: int) -> str:
    """One prompt: ``n_words`` words drawn uniformly from WORDS."""
    return " ".join(rng.choice(WORDS) for _ in range(n_words))
