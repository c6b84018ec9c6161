"""Anthropic Messages requests → internal generation requests (not via OpenAI shapes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.tokenizer import TemplateError
from vllm_mlx.engine.types import GenerationRequest, LogitsProcessorFactory

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


def _no_images() -> InvalidRequest:
    return InvalidRequest(
        "This model does not accept image or document input; send text content only.",
        param="messages",
    )


def _tool_result_text(block: ToolResultBlock) -> str:
    if block.content is None or isinstance(block.content, str):
        text = block.content or ""
    else:
        if any(isinstance(part, ImageBlock) for part in block.content):
            raise _no_images()
        text = "".join(part.text for part in block.content if isinstance(part, TextBlock))
    return f"Error: {text}" if block.is_error else text


def _user_messages(message: Message) -> list[dict[str, Any]]:
    """A user turn: tool results become tool messages, the rest one user message."""
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": block.tool_use_id,
                    "content": _tool_result_text(block),
                }
            )
        elif isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ImageBlock):
            raise _no_images()
    if texts:
        out.append({"role": "user", "content": "\n".join(texts)})
    return out


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


def template_messages(body: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    """The conversation as template messages.

    System entries inside ``messages`` (Claude Code's environment notes) join the system
    prompt in the order they stand: templates and small models expect one system turn.
    """
    systems = [_system_text(body.system) or ""]
    turns: list[dict[str, Any]] = []
    for message in body.messages:
        if message.role == "system":
            systems.append(_system_entry(message))
        elif message.role == "user":
            turns.extend(_user_messages(message))
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


def render_prompt(
    body: MessagesRequest | CountTokensRequest, ctx: ServingContext
) -> tuple[str, ToolMode, str | None]:
    mode, forced = _tool_mode(body, ctx)
    tools = template_tools(body)
    plan = thinking_plan(body, ctx)
    kwargs = {} if plan.enabled is None else {"enable_thinking": plan.enabled}
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


def prepare_messages(body: MessagesRequest, ctx: ServingContext) -> PreparedPrompt:
    """Template, tokenize, constrain and parse (CPU work: off the event loop)."""
    text, mode, forced = render_prompt(body, ctx)
    tools = template_tools(body)
    processors: list[LogitsProcessorFactory] = []
    if mode is ToolMode.FORCED:
        assert tools is not None
        builder = require_constraints(ctx, "tool_choice")
        processors.append(builder.tool_call(tools, forced, "tool_choice"))
    budget = thinking_plan(body, ctx).budget
    return prepared_chat(ctx, text, tools, mode, processors, max_thinking_tokens=budget)


def count_tokens(body: CountTokensRequest, ctx: ServingContext) -> int:
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
