"""Qwen3: the model opens and closes its own think block."""

from __future__ import annotations

from vllm_mlx.parsers.reasoning.base import ReasoningParser


class Qwen3ReasoningParser(ReasoningParser):
    """Qwen3 and QwQ-style ``<think>`` blocks written by the model.

    The Qwen3 template (Qwen/Qwen3-8B ``tokenizer_config.json``) ends the prompt
    with ``<|im_start|>assistant\\n`` and the model writes::

        <think>\\nThe user asks for 17 × 23.\\n</think>\\n\\n17 × 23 = 391.

    → reasoning ``"The user asks for 17 × 23."``, content ``"17 × 23 = 391."``

    - ``enable_thinking=False``: the template closes an empty block in the prompt
      (``…assistant\\n<think>\\n\\n</think>\\n\\n``); the output is all content.
    - ``/no_think``: the model writes the empty block itself
      (``<think>\\n\\n</think>\\n\\nHi!``) → reasoning None, content ``"Hi!"``.
    - Output without an opening tag is all content.
    - Qwen3-*-Thinking-2507 templates end the prompt with ``<think>\\n``; the output
      then holds only ``</think>``. Pass ``prompt_text`` so the parser knows.
    """

    name = "qwen3"
    starts_in_reasoning = False
