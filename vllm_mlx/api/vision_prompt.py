"""Chats with images → prompt ids, through the model's vision prompter.

The text path renders with the tokenizer's template and tokenizes the text
(``generation.prepared_chat``); a chat with images is rendered and tokenized by
the processor instead (``backend/vision.py``), which expands each
``{"type": "image"}`` part to that image's tokens. Tools are inlined the same way
as on the text path when the template ignores them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.generation import PreparedPrompt
from vllm_mlx.api.media import invalid_image, no_images
from vllm_mlx.api.output import ToolMode, processor_factory
from vllm_mlx.api.tool_prompt import inline_tools
from vllm_mlx.backend.vision import VisionInputError, VisionPrompter
from vllm_mlx.engine.types import ImageInput, LogitsProcessorFactory

# encode_chat's own arguments: a template kwarg of the same name would collide.
_RESERVED = frozenset({"images", "tools"})
_PROMPT_TAIL_TOKENS = 32  # enough to see whether the prompt ends inside a thinking block


def message_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of ``messages`` (string contents and text parts), for the window check."""
    texts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if p.get("type") == "text")
    return "".join(texts)


def encode_with_images(
    ctx: ServingContext,
    messages: list[dict[str, Any]],
    images: Sequence[ImageInput],
    locations: Callable[[], Sequence[str]],
    tools: list[dict[str, Any]] | None,
    /,
    **template_kwargs: Any,
) -> list[int]:
    """Prompt ids of a chat whose image parts stand for ``images`` (in order).

    ``locations`` gives each image's part (``messages[1].content[2]``), asked for only
    when the processor refuses the chat, to name the image it cannot take.
    """
    if ctx.vision is None:
        raise no_images("messages", ctx.model_id)
    if taken := sorted(_RESERVED & template_kwargs.keys()):
        raise InvalidRequest(f"chat_template_kwargs cannot set {', '.join(taken)}", "messages")
    ctx.check_text_fits(message_text(messages))  # text alone is a lower bound of the prompt
    has_tool_turns = any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
    if not ctx.tokenizer.template_knows_tools and (tools or has_tool_turns):
        messages, tools = inline_tools(messages, tools), None
    try:
        return ctx.vision.encode_chat(messages, images, tools=tools, **template_kwargs)
    except VisionInputError as exc:
        raise _blame(ctx.vision, images, locations(), exc) from exc


def _blame(
    vision: VisionPrompter,
    images: Sequence[ImageInput],
    locations: Sequence[str],
    error: VisionInputError,
) -> InvalidRequest:
    """The 400 for a refused chat, naming the first image the processor cannot take alone."""
    for image, location in zip(images, locations, strict=False):
        try:
            vision.image_token_count(image)
        except VisionInputError as exc:
            return invalid_image(location, str(exc))
    return InvalidRequest(f"messages: {error}", param="messages", code="invalid_image")


def prepared_with_images(
    ctx: ServingContext,
    ids: list[int],
    images: Sequence[ImageInput],
    tools: list[dict[str, Any]] | None,
    mode: ToolMode,
    processors: Sequence[LogitsProcessorFactory],
    max_thinking_tokens: int | None = None,
) -> PreparedPrompt:
    """What ``generation.prepared_chat`` makes of a text, for ids that hold images."""
    tail = ctx.tokenizer.decode(ids[-_PROMPT_TAIL_TOKENS:], skip_special_tokens=False)
    return PreparedPrompt(
        [ids],
        tuple(processors),
        processor_factory(
            ctx.agent, ctx.tokenizer.special_tokens, tools, mode, tail, max_thinking_tokens
        ),
        skip_special_tokens=mode is not ToolMode.AUTO,
        images=tuple(images),
    )
