"""Synthetic prompts are deterministic and about the requested length."""

from __future__ import annotations

from vllm_mlx.bench.prompts import WORDS, make_prompts, words_for_tokens


def test_same_seed_and_salt_give_the_same_prompts() -> None:
    assert make_prompts(5, 64, seed=3, salt="c1") == make_prompts(5, 64, seed=3, salt="c1")


def test_seed_and_salt_change_the_prompts() -> None:
    base = make_prompts(3, 64, seed=0, salt="c1")
    assert make_prompts(3, 64, seed=1, salt="c1") != base
    assert make_prompts(3, 64, seed=0, salt="c2") != base
    assert len(set(base)) == 3  # prompts within a set differ too


def test_prompt_length_follows_prompt_tokens() -> None:
    for tokens in (1, 16, 200):
        prompts = make_prompts(2, tokens, seed=0)
        assert all(len(p.split()) == words_for_tokens(tokens) for p in prompts)
        assert all(set(p.split()) <= set(WORDS) for p in prompts)


def test_a_prefix_of_the_set_is_stable_when_count_grows() -> None:
    # Changing --num-prompts must not reshuffle the prompts already measured.
    assert make_prompts(6, 32, seed=0)[:4] == make_prompts(4, 32, seed=0)
