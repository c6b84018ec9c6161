"""What the simulated users send: conversations built from synthetic prompts.

A level is a list of conversations, one per simulated user. Each turn sends
the whole history so far plus one new user message::

    turn 1   [system?] user1
    turn 2   [system?] user1 assistant1 user2
    turn 3   [system?] user1 assistant1 user2 assistant2 user3

``system`` is the same ``--shared-prefix-tokens`` text for every conversation
of a level, so a server with a prefix cache computes it once; later turns
extend the previous turn's prompt, so their prefix is cached as well. With
neither option a conversation is one plain user message, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.prompts import make_prompts

Message = dict[str, Any]  # one OpenAI chat message


@dataclass(frozen=True)
class Conversation:
    system: str | None  # shared system text of the level; None without a shared prefix
    user_turns: tuple[str, ...]  # the new user message of each turn, in order

    def messages(self, history: list[Message], turn: int) -> list[Message]:
        """Messages of ``turn`` (0-based): the system text, ``history``, the new user text."""
        head: list[Message] = [] if self.system is None else [system_message(self.system)]
        return [*head, *history, user_message(self.user_turns[turn])]


def user_message(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant_message(text: str) -> Message:
    return {"role": "assistant", "content": text}


def system_message(text: str) -> Message:
    return {"role": "system", "content": text}


def shared_system_text(cfg: BenchConfig, salt: str) -> str | None:
    """The ``--shared-prefix-tokens`` system text for one level (None when off).

    Deterministic for (seed, salt); each level has its own salt, so a level
    cannot reuse the prefix that an earlier level put into the cache.
    """
    if cfg.shared_prefix_tokens < 1:
        return None
    return make_prompts(1, cfg.shared_prefix_tokens, cfg.seed, salt=f"system:{salt}")[0]


def make_conversations(cfg: BenchConfig, count: int, salt: str, turns: int) -> list[Conversation]:
    """``count`` conversations of ``turns`` user messages of ``--prompt-tokens`` each.

    With one turn, the user messages are exactly ``make_prompts(count, ..., salt)``.
    """
    texts = make_prompts(count * turns, cfg.prompt_tokens, cfg.seed, salt=salt)
    system = shared_system_text(cfg, salt)
    return [
        Conversation(system=system, user_turns=tuple(texts[i * turns : (i + 1) * turns]))
        for i in range(count)
    ]


def level_conversations(cfg: BenchConfig, level: int) -> list[Conversation]:
    """The measured conversations of one concurrency level (one per simulated user)."""
    return make_conversations(cfg, cfg.prompts_for(level), f"c{level}", cfg.multi_turn)


def warmup_conversations(cfg: BenchConfig) -> list[Conversation]:
    """Unmeasured single-turn requests, distinct from every measured set."""
    return make_conversations(cfg, cfg.warmup, "warmup", 1)
