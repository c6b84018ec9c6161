"""Anthropic Messages requests → internal generation requests (not via OpenAI shapes)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vllm_mlx.api import media
from vllm_mlx.api.anthropic.context_edits import apply_edits
from vllm_mlx.api.anthropic.protocol import (
    CountTokensRequest,
    ImageBlock,
    Message,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from vllm_mlx.api.context import ServingContext, require_constraints
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.generation import PreparedPrompt, prepared_chat
from vllm_mlx.api.output import TOOLS_UNPARSED, ToolMode
from vllm_mlx.api.requests import RequestSpec, generation_requests
from vllm_mlx.api.tool_prompt import render_with_tools
from vllm_mlx.api.vision_prompt import encode_with_images, prepared_with_images
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.tokenizer import TemplateError
from vllm_mlx.engine.types import GenerationRequest, ImageInput, LogitsProcessorFactory

# The guide's defaults for /v1/messages when neither the request, the server nor the
# model's generation_config.json sets them.
DEFAULTS = SamplingDefaults(temperature=0.7, top_p=0.9, top_k=0)
# output_config.effort as a thinking budget (tokens); "max" thinks without a cap.
EFFORT_BUDGET: dict[str, int | None] = {"low": 1024, "medium": 4096, "high": 16384, "max": None}


# Claude Code sends its billing header as the first system block; it is not an instruction.
BILLING_HEADER = "x-anthropic-billing-header:"


def _system_text(system: str | list[TextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system
    return "\n\n".join(b.text for b in system if not b.text.startswith(BILLING_HEADER))


def _no_documents(location: str) -> InvalidRequest:
    return InvalidRequest(
        f"{location}: document blocks are not supported; send text or image blocks",
        param="messages",
    )


def _tool_result_text(block: ToolResultBlock, location: str) -> str:
    if block.content is None or isinstance(block.content, str):
        text = block.content or ""
    else:
        for k, part in enumerate(block.content):
            if isinstance(part, ImageBlock):
                where = f"{location}.content[{k}]"
                raise media.invalid_image(where, "images inside tool_result are not supported")
        text = "".join(part.text for part in block.content if isinstance(part, TextBlock))
    return f"Error: {text}" if block.is_error else text


def _user_messages(message: Message, index: int, with_images: bool) -> list[dict[str, Any]]:
    """A user turn: tool results become tool messages, the rest one user message.

    With ``with_images`` an image block becomes ``{"type": "image"}`` in a content list;
    without, it is a 400 (a text-only model, or no images loaded).
    """
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        location = f"messages[{index}].content[{j}]"
        if isinstance(block, ToolResultBlock):
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": block.tool_use_id,
                    "content": _tool_result_text(block, location),
                }
            )
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            if block.type == "document":
                raise _no_documents(location)
            if not with_images:
                raise media.no_images(location)
            parts.append({"type": "image"})
    if any(part["type"] == "image" for part in parts):
        out.append({"role": "user", "content": parts})
    elif parts:
        out.append({"role": "user", "content": "\n".join(part["text"] for part in parts)})
    return out


def image_sources(body: MessagesRequest | CountTokensRequest) -> list[media.ImageSource]:
    """The image blocks of user turns, in prompt order (template_messages' order)."""
    sources = []
    for i, message in enumerate(body.messages):
        if message.role != "user" or isinstance(message.content, str):
            continue
        for j, block in enumerate(message.content):
            if isinstance(block, ImageBlock) and block.type == "image":
                sources.append(media.anthropic_image(block.source, f"messages[{i}].content[{j}]"))
    return sources


def _assistant_message(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    texts, calls = [], []
    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            function = {"name": block.name, "arguments": block.input}
            calls.append({"id": block.id, "type": "function", "function": function})
        elif not isinstance(block, ThinkingBlock | RedactedThinkingBlock):  # not replayed
            raise InvalidRequest(f"assistant messages cannot hold {block.type} blocks", "messages")
    item: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        item["tool_calls"] = calls
    return item


def _system_entry(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    if not all(isinstance(block, TextBlock) for block in message.content):
        raise InvalidRequest("system entries in messages may hold text blocks only", "messages")
    return "\n\n".join(block.text for block in message.content)  # type: ignore[union-attr]


def template_messages(
    body: MessagesRequest | CountTokensRequest, with_images: bool = False
) -> list[dict[str, Any]]:
    """The conversation as template messages (``with_images``: see ``_user_messages``).

    System entries inside ``messages`` (Claude Code's environment notes) join the system
    prompt in the order they stand: templates and small models expect one system turn.
    """
    systems = [_system_text(body.system) or ""]
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(body.messages):
        if message.role == "system":
            systems.append(_system_entry(message))
        elif message.role == "user":
            turns.extend(_user_messages(message, index, with_images))
        else:
            turns.append(_assistant_message(message))
    system = "\n\n".join(s for s in systems if s)
    return [{"role": "system", "content": system}, *turns] if system else turns


def template_tools(body: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]] | None:
    if not body.tools:
        return None
    for tool in body.tools:
        if tool.type not in (None, "custom"):
            raise InvalidRequest(f"server tool '{tool.type}' is not supported", "tools")
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description or "",
                "parameters": t.input_schema,
            },
        }
        for t in body.tools
    ]


def _tool_mode(
    body: MessagesRequest | CountTokensRequest, ctx: ServingContext
) -> tuple[ToolMode, str | None]:
    choice = body.tool_choice.type if body.tool_choice else "auto"
    if not body.tools or choice == "none":
        return ToolMode.NONE, None
    if choice == "any":
        return ToolMode.FORCED, None
    if choice == "tool":
        name = body.tool_choice.name if body.tool_choice else None
        if name not in {t.name for t in body.tools}:
            raise InvalidRequest("tool_choice.name must be one of the tools", "tool_choice")
        return ToolMode.FORCED, name
    if ctx.agent.enable_auto_tool_choice and ctx.agent.tool_call_parser:
        return ToolMode.AUTO, None
    # Agents (Claude Code) always offer tools; without a parser they get plain text.
    ctx.notices.warn_once(TOOLS_UNPARSED)
    return ToolMode.NONE, None


@dataclass(frozen=True)
class ThinkingPlan:
    """What a request asks of the model's thinking."""

    enabled: bool | None = None  # the template's enable_thinking; None: its default
    budget: int | None = None  # thinking tokens before the rest is routed to content


def thinking_plan(body: MessagesRequest | CountTokensRequest, ctx: ServingContext) -> ThinkingPlan:
    """``thinking`` and ``output_config.effort`` as template switch and thinking budget."""
    thinking = body.thinking
    effort = body.output_config.effort if body.output_config else None
    if thinking is not None and thinking.type == "disabled":
        return ThinkingPlan(enabled=False)
    if not ctx.agent.reasoning_parser:
        return ThinkingPlan()  # nothing to separate thinking from the answer
    budget = EFFORT_BUDGET[effort] if effort else None
    if thinking is not None and thinking.type == "enabled" and thinking.budget_tokens:
        budget = thinking.budget_tokens
    return ThinkingPlan(True if thinking is not None else None, budget)


def _template_kwargs(body: MessagesRequest | CountTokensRequest, ctx: ServingContext) -> Any:
    plan = thinking_plan(body, ctx)
    return {} if plan.enabled is None else {"enable_thinking": plan.enabled}


def render_prompt(
    body: MessagesRequest | CountTokensRequest, ctx: ServingContext
) -> tuple[str, ToolMode, str | None]:
    mode, forced = _tool_mode(body, ctx)
    tools = template_tools(body)
    kwargs = _template_kwargs(body, ctx)
    messages = template_messages(body)

    def render() -> str:
        try:
            return render_with_tools(ctx.tokenizer, messages, tools, **kwargs)
        except TemplateError as exc:
            raise InvalidRequest(str(exc), param="messages") from exc

    def count() -> int:
        return len(ctx.tokenizer.encode(render(), add_special_tokens=False))

    messages = apply_edits(messages, body.context_management, count)
    return render(), mode, forced


def encode_prompt(
    body: MessagesRequest | CountTokensRequest, ctx: ServingContext, images: Sequence[ImageInput]
) -> tuple[list[int], ToolMode, str | None]:
    """:func:`render_prompt` for a chat with images: prompt ids from the vision prompter."""
    mode, forced = _tool_mode(body, ctx)
    tools = template_tools(body)
    kwargs = _template_kwargs(body, ctx)
    messages = template_messages(body, with_images=True)

    def where() -> list[str]:
        return [source.location for source in image_sources(body)]

    def encode() -> list[int]:
        return encode_with_images(ctx, messages, images, where, tools, **kwargs)

    messages = apply_edits(messages, body.context_management, lambda: len(encode()))
    return encode(), mode, forced


def prepare_messages(
    body: MessagesRequest, ctx: ServingContext, images: Sequence[ImageInput] = ()
) -> PreparedPrompt:
    """Template, tokenize, constrain and parse (CPU work: off the event loop).

    ``images`` are the request's (``media.load_images`` of :func:`image_sources`).
    """
    if images:
        ids, mode, forced = encode_prompt(body, ctx, images)
    else:
        text, mode, forced = render_prompt(body, ctx)
    tools = template_tools(body)
    processors: list[LogitsProcessorFactory] = []
    if mode is ToolMode.FORCED:
        assert tools is not None
        builder = require_constraints(ctx, "tool_choice")
        processors.append(builder.tool_call(tools, forced, "tool_choice"))
    budget = thinking_plan(body, ctx).budget
    if images:
        return prepared_with_images(ctx, ids, images, tools, mode, processors, budget)
    return prepared_chat(ctx, text, tools, mode, processors, max_thinking_tokens=budget)


def count_tokens(
    body: CountTokensRequest, ctx: ServingContext, images: Sequence[ImageInput] = ()
) -> int:
    """The prompt's tokens as /v1/messages sends it, each image's expanded tokens included."""
    if images:
        return len(encode_prompt(body, ctx, images)[0])
    text, _, _ = render_prompt(body, ctx)
    ctx.check_text_fits(text)  # a text that cannot fit is refused, not tokenized
    return len(ctx.tokenizer.encode(text, add_special_tokens=False))


def generation_request(
    request_id: str,
    prepared: PreparedPrompt,
    body: MessagesRequest,
    ctx: ServingContext,
    max_tokens_factor: float,
) -> GenerationRequest:
    """The one sequence; ``max_tokens_factor`` is ServingContext.max_tokens_factor, read once."""
    spec = RequestSpec(
        protocol_defaults=DEFAULTS,
        numbered_ids=False,
        # Agents send a fixed large max_tokens (Claude Code: 32000); fit it to the window.
        max_tokens=body.max_tokens,
        max_tokens_is_ceiling=True,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=tuple(body.stop_sequences or ()),
        # /v1/messages has no repetition override: the server's mode applies.
    )
    (request,) = generation_requests(ctx, request_id, prepared, spec, max_tokens_factor)
    return request


def tool_input(arguments: str) -> dict[str, Any]:
    """Tool-call arguments as the object Anthropic's tool_use.input holds."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}
