"""Conversations: shared system text, turns and history."""

from __future__ import annotations

from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.runner import level_prompts, warmup_prompts
from vllm_mlx.bench.workload import (
    Conversation,
    assistant_message,
    level_conversations,
    shared_system_text,
    user_message,
    warmup_conversations,
)


def test_plain_conversations_are_the_old_prompts() -> None:
    cfg = BenchConfig(num_prompts=3, prompt_tokens=12, warmup=2)
    conversations = level_conversations(cfg, 2)
    assert [c.user_turns[0] for c in conversations] == level_prompts(cfg, 2)
    assert all(c.system is None and len(c.user_turns) == 1 for c in conversations)
    assert [c.user_turns[0] for c in warmup_conversations(cfg)] == warmup_prompts(cfg)


def test_shared_system_text_is_common_to_a_level_only() -> None:
    cfg = BenchConfig(num_prompts=3, prompt_tokens=8, shared_prefix_tokens=50)
    level1, level2 = level_conversations(cfg, 1), level_conversations(cfg, 2)
    systems = {c.system for c in level1}
    assert len(systems) == 1 and level1[0].system is not None
    assert len(level1[0].system.split()) == 50
    assert level2[0].system != level1[0].system  # a level cannot reuse another's prefix
    assert level1[0].system == shared_system_text(cfg, "c1")  # deterministic
    assert len({c.user_turns for c in level1}) == 3  # the user parts differ
    assert shared_system_text(BenchConfig(), "c1") is None


def test_multi_turn_conversations_have_distinct_turns() -> None:
    cfg = BenchConfig(num_prompts=2, prompt_tokens=5, multi_turn=3)
    conversations = level_conversations(cfg, 1)
    assert len(conversations) == 2 and all(len(c.user_turns) == 3 for c in conversations)
    assert len({t for c in conversations for t in c.user_turns}) == 6
    [warmup, _] = warmup_conversations(BenchConfig(warmup=2, multi_turn=3))
    assert len(warmup.user_turns) == 1  # warmup stays single-turn


def test_messages_of_a_turn_carry_system_history_and_new_user_text() -> None:
    conv = Conversation(system="sys", user_turns=("u1", "u2"))
    assert conv.messages([], 0) == [{"role": "system", "content": "sys"}, user_message("u1")]
    history = [user_message("u1"), assistant_message("a1")]
    assert conv.messages(history, 1) == [
        {"role": "system", "content": "sys"}, user_message("u1"),
        {"role": "assistant", "content": "a1"}, user_message("u2"),
    ]  # fmt: skip
    assert Conversation(None, ("u1",)).messages([], 0) == [user_message("u1")]
