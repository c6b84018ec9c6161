"""Responses requests → internal generation requests (not via chat-completion shapes).

The conversation is ``instructions`` (the system turn), the stored conversation of
``previous_response_id`` (its input and output, as template messages), then ``input``.
A follow-up turn therefore renders as the first turn's prompt plus its reply, and the
prefix cache serves that part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vllm_mlx.api.context import ServingContext, require_constraints
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.generation import PreparedPrompt, prepared_chat
from vllm_mlx.api.openai.responses.items import (
    flat_functions,
    function_tools,
    template_messages,
)
from vllm_mlx.api.openai.responses.protocol import ResponsesRequest
from vllm_mlx.api.output import TOOLS_UNPARSED, ToolMode
from vllm_mlx.api.requests import RequestSpec, generation_requests
from vllm_mlx.api.tool_prompt import render_with_tools
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.tokenizer import TemplateError
from vllm_mlx.engine.types import GenerationRequest, LogitsProcessorFactory

# OpenAI's defaults when neither the request, the server nor the model sets a value.
DEFAULTS = SamplingDefaults(temperature=1.0, top_p=1.0, top_k=0)
# reasoning.effort as a thinking budget (tokens); None: no cap. "none" turns thinking off.
EFFORT_BUDGET: dict[str, int | None] = {
    "minimal": 256,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": None,
}


@dataclass(frozen=True)
class Conversation:
    """What one request renders: the template messages and the function tools."""

    messages: list[dict[str, Any]]  # instructions, stored turns, then this input
    new_messages: list[dict[str, Any]]  # stored turns and this input, for the store
    tools: list[dict[str, Any]] | None  # chat-template shape; None: no tools offered


def conversation(body: ResponsesRequest, history: Sequence[dict[str, Any]]) -> Conversation:
    """``history`` is the previous response's conversation (no instructions), or empty."""
    if body.background:
        raise InvalidRequest("background responses are not supported", "background")
    turns = template_messages(body.input, history)
    if not turns:
        raise InvalidRequest("input must hold at least one item", "input")
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    tools = function_tools(body.tools)  # tools that cannot run are refused even when unused
    tools = None if body.tool_choice == "none" else tools
    return Conversation([*system, *turns], turns, tools)


def tool_mode(body: ResponsesRequest, ctx: ServingContext) -> tuple[ToolMode, str | None]:
    """How tools are used, and the forced function's name when one is named."""
    choice = body.tool_choice
    names = {t.get("name") for t, _ in flat_functions(body.tools)}
    if isinstance(choice, dict):
        name = choice.get("name")
        if choice.get("type") != "function" or not isinstance(name, str) or name not in names:
            raise InvalidRequest(
                'tool_choice must name one of the tools: {"type": "function", "name": ...}',
                "tool_choice",
            )
        return ToolMode.FORCED, name
    if choice == "required":
        if not body.tools:
            raise InvalidRequest(
                "tool_choice 'required' needs a non-empty tools list", "tool_choice"
            )
        return ToolMode.FORCED, None
    if not body.tools or choice == "none":
        return ToolMode.NONE, None
    if ctx.agent.enable_auto_tool_choice and ctx.agent.tool_call_parser:
        return ToolMode.AUTO, None
    # Agents send their tools on every request; without a parser, calls stay text.
    ctx.notices.warn_once(TOOLS_UNPARSED)
    return ToolMode.NONE, None


def _text_format(body: ResponsesRequest, ctx: ServingContext) -> LogitsProcessorFactory | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    constraints = require_constraints(ctx, "text.format")
    if fmt.type == "json_object":
        return constraints.json_object()
    if fmt.schema_ is None:
        raise InvalidRequest("text.format.schema must be a JSON schema object", "text.format")
    return constraints.json_schema(fmt.schema_, "text.format")


def _thinking(body: ResponsesRequest, ctx: ServingContext) -> tuple[dict[str, Any], int | None]:
    """Template kwargs and thinking budget from ``reasoning.effort``."""
    effort = body.reasoning.effort if body.reasoning else None
    if effort is None:
        return {}, None
    if effort == "none":
        return {"enable_thinking": False}, None
    if not ctx.agent.reasoning_parser:
        return {}, None  # nothing separates thinking from the answer: the template decides
    return {"enable_thinking": True}, EFFORT_BUDGET[effort]


def prepare(body: ResponsesRequest, convo: Conversation, ctx: ServingContext) -> PreparedPrompt:
    """Template, tokenize, constrain and parse (CPU work: off the event loop)."""
    mode, forced = tool_mode(body, ctx)
    processors: list[LogitsProcessorFactory] = []
    if mode is ToolMode.FORCED:
        assert convo.tools is not None
        builder = require_constraints(ctx, "tool_choice")
        processors.append(builder.tool_call(convo.tools, forced, "tool_choice"))
    elif (json_format := _text_format(body, ctx)) is not None:
        processors.append(json_format)
    kwargs, budget = _thinking(body, ctx)
    try:
        text = render_with_tools(ctx.tokenizer, convo.messages, convo.tools, **kwargs)
    except TemplateError as exc:
        raise InvalidRequest(str(exc), param="input") from exc
    return prepared_chat(ctx, text, convo.tools, mode, processors, max_thinking_tokens=budget)


def generation_request(
    request_id: str,
    prepared: PreparedPrompt,
    body: ResponsesRequest,
    ctx: ServingContext,
    max_tokens_factor: float,
) -> GenerationRequest:
    """The one sequence; ``max_tokens_factor`` is ServingContext.max_tokens_factor, read once."""
    spec = RequestSpec(
        protocol_defaults=DEFAULTS,
        numbered_ids=False,
        # Agents send a large fixed budget; fit it to the window (cut: status incomplete).
        max_tokens=body.max_output_tokens,
        max_tokens_is_ceiling=True,
        temperature=body.temperature,
        top_p=body.top_p,
    )
    (request,) = generation_requests(ctx, request_id, prepared, spec, max_tokens_factor)
    return request
