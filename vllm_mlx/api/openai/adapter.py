"""OpenAI request bodies → prompts and the protocol-neutral request spec."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vllm_mlx.api import media
from vllm_mlx.api.context import ServingContext, require_constraints
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.generation import PreparedPrompt, prepared_chat
from vllm_mlx.api.openai.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ImagePart,
    ImageURL,
    SamplingFields,
    TextPart,
)
from vllm_mlx.api.output import TOOLS_UNPARSED, ToolMode
from vllm_mlx.api.requests import RequestSpec
from vllm_mlx.api.tool_prompt import render_with_tools
from vllm_mlx.api.vision_prompt import encode_with_images, prepared_with_images
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.tokenizer import TemplateError
from vllm_mlx.config import RepetitionPolicy
from vllm_mlx.engine.types import ImageInput, LogitsProcessorFactory

# OpenAI's defaults when neither the request, the server nor the model sets a value.
DEFAULTS = SamplingDefaults(temperature=1.0, top_p=1.0, top_k=0)


def chat_spec(
    body: ChatCompletionRequest, ctx: ServingContext, repetition: RepetitionPolicy | None = None
) -> RequestSpec:
    """A chat body as the neutral spec: max_completion_tokens wins over max_tokens."""
    top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
    max_tokens = body.max_completion_tokens or body.max_tokens
    return request_spec(body, ctx, max_tokens, top_logprobs, repetition)


def completion_spec(
    body: CompletionRequest, ctx: ServingContext, repetition: RepetitionPolicy | None = None
) -> RequestSpec:
    return request_spec(body, ctx, body.max_tokens, body.logprobs, repetition)


def request_spec(
    body: SamplingFields,
    ctx: ServingContext,
    max_tokens: int | None,
    top_logprobs: int | None,
    repetition: RepetitionPolicy | None = None,
) -> RequestSpec:
    """Map the sampling fields both endpoints share; omitted ones stay None for defaults.

    ``top_logprobs`` is the alternatives per position, None when logprobs are off;
    ``repetition`` the request's loop-detector mode (api/trust.py), None: the server's.
    """
    vocab = ctx.tokenizer.vocab_size
    bias = []
    for key, value in (body.logit_bias or {}).items():
        token = int(key)
        if not 0 <= token < vocab:
            raise InvalidRequest(
                f"logit_bias: token id {token} is outside the vocabulary", "logit_bias"
            )
        bias.append((token, value))
    return RequestSpec(
        protocol_defaults=DEFAULTS,
        n=body.n,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=tuple(bias),
        seed=body.seed,
        stop=body.stop_list,
        ignore_eos=body.ignore_eos,
        top_logprobs=top_logprobs,
        repetition=repetition,
    )


def _message_content(
    message: ChatMessage, index: int, with_images: bool
) -> str | list[dict[str, Any]] | None:
    """A string, or HF content parts (``{"type": "image"}`` per image) when it holds images.

    Without ``with_images`` (a text-only model, or no images loaded) an image is a 400.
    """
    if message.content is None or isinstance(message.content, str):
        return message.content
    if all(isinstance(part, TextPart) for part in message.content):
        return "".join(part.text for part in message.content)  # type: ignore[union-attr]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(message.content):
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
            continue
        location = f"messages[{index}].content[{j}]"
        if message.role != "user":
            raise media.invalid_image(location, "images are allowed in user messages only")
        if not with_images:
            raise media.no_images(location)
        parts.append({"type": "image"})
    return parts


def image_sources(messages: list[ChatMessage]) -> list[media.ImageSource]:
    """The image parts of user messages, in prompt order (template_messages' order)."""
    sources = []
    for i, message in enumerate(messages):
        if message.role != "user" or not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if isinstance(part, ImagePart):
                image = part.image_url
                url = image.url if isinstance(image, ImageURL) else image
                sources.append(media.openai_image(url, f"messages[{i}].content[{j}]"))
    return sources


def template_messages(
    messages: list[ChatMessage], with_images: bool = False
) -> list[dict[str, Any]]:
    """Messages as HF chat templates expect them (tool-call arguments as objects).

    ``with_images``: image parts become ``{"type": "image"}`` in content lists.
    """
    out: list[dict[str, Any]] = []
    for index, m in enumerate(messages):
        item: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
        item["content"] = _message_content(m, index, with_images) or ""
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {
                        "name": tc.function.name,
                        "arguments": _json_or_text(tc.function.arguments),
                    },
                }
                for tc in m.tool_calls
            ]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        if m.name:
            item["name"] = m.name
        out.append(item)
    return out


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _tool_mode(body: ChatCompletionRequest, ctx: ServingContext) -> tuple[ToolMode, str | None]:
    """How tools are used, and the forced function name if one is named."""
    choice = body.tool_choice
    if not body.tools or choice == "none":
        if isinstance(choice, dict) or choice == "required":
            raise InvalidRequest("tool_choice needs a non-empty tools list", "tool_choice")
        return ToolMode.NONE, None
    if choice == "required":
        return ToolMode.FORCED, None
    if isinstance(choice, dict):
        name = _function_name(choice)
        names = {_function_name(t) for t in body.tools}
        if choice.get("type") != "function" or not name or name not in names:
            raise InvalidRequest(
                "tool_choice must name one of the tools: "
                '{"type": "function", "function": {"name": ...}}',
                "tool_choice",
            )
        return ToolMode.FORCED, str(name)
    if choice not in (None, "auto"):
        raise InvalidRequest(
            f"tool_choice '{choice}' is not one of none, auto, required", "tool_choice"
        )
    if not (ctx.agent.enable_auto_tool_choice and ctx.agent.tool_call_parser):
        # Many clients send their tools on every request: serve them, calls stay text.
        ctx.notices.warn_once(TOOLS_UNPARSED)
        return ToolMode.NONE, None
    return ToolMode.AUTO, None


def _function_name(item: dict[str, Any]) -> str | None:
    """``item["function"]["name"]`` of a tool or tool_choice, if it is a string."""
    function = item.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def _response_format(
    body: ChatCompletionRequest, ctx: ServingContext
) -> LogitsProcessorFactory | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    constraints = require_constraints(ctx, "response_format")
    if fmt.type == "json_object":
        return constraints.json_object()
    spec = fmt.json_schema or {}
    schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else None
    if schema is None:
        raise InvalidRequest(
            "response_format.json_schema.schema must be an object", "response_format"
        )
    return constraints.json_schema(schema, "response_format")


def prepare_chat(
    body: ChatCompletionRequest, ctx: ServingContext, images: Sequence[ImageInput] = ()
) -> PreparedPrompt:
    """Template, tokenize and set up constraints and parsers (CPU work: off the event loop).

    ``images`` are the request's (``media.load_images`` of :func:`image_sources`); with
    them the model's vision prompter encodes the chat.
    """
    mode, forced_name = _tool_mode(body, ctx)
    tools = body.tools if body.tools and body.tool_choice != "none" else None
    processors: list[LogitsProcessorFactory] = []
    if mode is ToolMode.FORCED:
        assert tools is not None
        processors.append(
            require_constraints(ctx, "tool_choice").tool_call(tools, forced_name, "tool_choice")
        )
    elif (json_format := _response_format(body, ctx)) is not None:
        processors.append(json_format)
    kwargs = body.chat_template_kwargs or {}
    if images:
        ids = _encode_with_images(body, ctx, images, tools, kwargs)
        return prepared_with_images(ctx, ids, images, tools, mode, processors)
    try:
        text = render_with_tools(ctx.tokenizer, template_messages(body.messages), tools, **kwargs)
    except TemplateError as exc:
        raise InvalidRequest(str(exc), param="messages") from exc
    return prepared_chat(ctx, text, tools, mode, processors)


def _encode_with_images(
    body: ChatCompletionRequest,
    ctx: ServingContext,
    images: Sequence[ImageInput],
    tools: list[dict[str, Any]] | None,
    template_kwargs: dict[str, Any],
) -> list[int]:
    def locations() -> list[str]:
        return [source.location for source in image_sources(body.messages)]

    messages = template_messages(body.messages, with_images=True)
    return encode_with_images(ctx, messages, images, locations, tools, **template_kwargs)


def prepare_completion(body: CompletionRequest, ctx: ServingContext) -> PreparedPrompt:
    return PreparedPrompt(completion_prompts(body, ctx))


def completion_prompts(body: CompletionRequest, ctx: ServingContext) -> list[list[int]]:
    """One token list per prompt; token-id prompts pass through unchanged."""
    if body.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidRequest("best_of is not supported; use n", param="best_of")
    prompt = body.prompt
    if isinstance(prompt, str):
        raw: list[str | list[int]] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        raw = [prompt]  # type: ignore[list-item]
    else:
        raw = list(prompt)  # type: ignore[arg-type]
    if not raw:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    prompts = []
    vocab = ctx.tokenizer.vocab_size
    for item in raw:
        if isinstance(item, str):
            ctx.check_text_fits(item, param="prompt")
            ids = ctx.tokenizer.encode(item)
        else:
            ids = list(item)
        if not ids:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        if any(not 0 <= t < vocab for t in ids):
            raise InvalidRequest("prompt contains token ids outside the vocabulary", "prompt")
        prompts.append(ids)
    return prompts
