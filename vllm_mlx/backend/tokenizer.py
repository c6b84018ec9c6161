"""A narrow tokenizer interface over the HF tokenizer that mlx-lm loads."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any


class TemplateError(ValueError):
    """The chat template rejected the conversation (e.g. roles out of order)."""


class Tokenizer:
    """Encode, decode and chat templating; safe to call from any thread (no MLX)."""

    def __init__(self, wrapper: Any, eos_token_ids: frozenset[int]) -> None:
        self._hf = getattr(wrapper, "_tokenizer", wrapper)
        # The Rust tokenizer decodes several times faster than the Python wrapper.
        self._fast = getattr(self._hf, "_tokenizer", None)
        self.eos_token_ids = eos_token_ids
        template = getattr(self._hf, "chat_template", None)
        self.has_chat_template = bool(template)
        # Templates that never mention tools drop tool definitions and calls.
        self.template_knows_tools = isinstance(template, str) and "tool" in template
        self.vocab_size = len(self._hf)  # ids at or above this cannot be decoded

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        if self._fast is not None:
            return str(self._fast.decode(list(ids), skip_special_tokens=skip_special_tokens))
        return str(self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens))

    @cached_property
    def longest_token_chars(self) -> int | None:
        """Characters of the vocabulary's longest token (None: the vocabulary is unknown).

        No token covers more characters of a text than this, so ``len(text) / longest``
        is a lower bound on its token count (unless a normalizer deletes characters,
        which chat tokenizers do not). Byte-level vocabularies spell each byte as one
        character and byte-fallback pieces (``<0x0A>``) are longer than their byte: the
        bound only gets looser.
        """
        get_vocab = getattr(self._hf, "get_vocab", None)
        vocab = get_vocab() if callable(get_vocab) else None
        return max(map(len, vocab)) if vocab else None

    @property
    def special_tokens(self) -> list[str]:
        """Text of every special token, to scrub them from content."""
        return [str(t) for t in getattr(self._hf, "all_special_tokens", [])]

    def token_text(self, token_id: int) -> str:
        """One token as text, as OpenAI logprobs show it."""
        return self.decode([token_id])

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        /,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """Render a conversation with the model's chat template (``template_kwargs``
        reach the template; positional ``messages`` keeps any name free for them)."""
        if not self.has_chat_template:
            return _plain_transcript(messages, add_generation_prompt)
        try:
            text = self._hf.apply_chat_template(
                messages,
                tools=tools,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                **template_kwargs,
            )
        except Exception as exc:  # jinja raises arbitrary errors for bad conversations
            raise TemplateError(f"chat template failed: {exc}") from exc
        return str(text)

    def encode_chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
        # The template already writes BOS where the model wants it.
        return self.encode(self.render_chat(messages, **kwargs), add_special_tokens=False)


def _plain_transcript(messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    """Fallback for base models without a chat template."""
    lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
    if add_generation_prompt:
        lines.append("assistant:")
    return "\n".join(lines)
