"""DeepSeek-R1: the template opens the think block, the model closes it."""

from __future__ import annotations

from vllm_mlx.parsers.reasoning.base import ReasoningParser


class DeepSeekR1ReasoningParser(ReasoningParser):
    """DeepSeek-R1 and the R1-Distill models.

    The template (deepseek-ai/DeepSeek-R1 ``tokenizer_config.json``) ends the prompt
    with ``<｜Assistant｜><think>\\n``, so the output starts inside the block::

        Okay, 17 × 20 = 340, plus 51 is 391.\\n</think>\\n\\n17 × 23 = 391.

    → reasoning ``"Okay, 17 × 20 = 340, plus 51 is 391."``, content ``"17 × 23 = 391."``

    - Some releases (DeepSeek-R1-0528) write the opening tag themselves:
      ``<think>\\nOkay…\\n</think>\\n\\n…``; one leading ``<think>`` is skipped.
    - R1 always thinks, so without a prompt (or one that does not end with a tag)
      the output is taken to start inside the block, and an output without
      ``</think>`` is all reasoning.
    - A prompt ending with ``</think>`` (thinking switched off) means all content.
    """

    name = "deepseek_r1"
    starts_in_reasoning = True
