"""POST /v1/chat/completions: run a chat body and render chat.completion bodies and chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from vllm_mlx.api import media
from vllm_mlx.api.context import ServingContext, new_id
from vllm_mlx.api.diagnostics import diagnostics_fn
from vllm_mlx.api.generation import ChoiceResult
from vllm_mlx.api.openai import adapter, common
from vllm_mlx.api.openai.common import ResponseMeta, StreamOptions
from vllm_mlx.api.openai.protocol import ChatCompletionRequest
from vllm_mlx.api.output import OutputAccumulator, OutputDelta, OutputProcessor
from vllm_mlx.api.requests import generation_requests
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import GenerationRequest, TokenLogprob


async def create(request: Request, ctx: ServingContext, body: ChatCompletionRequest) -> Response:
    """Load images, template and tokenize off the event loop, run, answer as OpenAI."""
    ctx.check_model(body.model)
    images = await media.load_images(adapter.image_sources(body.messages), ctx)
    prepared = await asyncio.to_thread(adapter.prepare_chat, body, ctx, images)
    scope = common.request_scope(request, ctx, body)
    spec = adapter.chat_spec(body, ctx, scope.repetition.mode)
    gen = generation_requests(ctx, scope.request_id, prepared, spec, scope.max_tokens_factor)
    meta = ResponseMeta(new_id("chatcmpl-"), body.model, common.now())
    want_logprobs, prompts = spec.top_logprobs is not None, len(prepared.prompts)
    asked = replace(scope.diagnostics(body, prompts), visual_inputs=len(images))
    diagnostics = diagnostics_fn(ctx, asked)
    opts = StreamOptions(
        body.include_usage,
        want_logprobs,
        prompts,
        ctx.policy.timeout_s,
        prepared.output,
        diagnostics,
    )
    return await common.respond(
        request,
        ctx,
        body,
        gen,
        stream=lambda: stream_response(ctx.engine, gen, meta, opts),
        full=lambda results: full_response(meta, results, prompts, want_logprobs, prepared.output),
        diagnostics=diagnostics,
    )


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": _bytes(lp.token),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": _bytes(t.token)}
                    for t in lp.top
                ],
            }
            for lp in items
        ]
    }


def _message(out: OutputAccumulator) -> dict[str, Any]:
    calls = out.tool_calls()
    message: dict[str, Any] = {"role": "assistant", "content": out.content_text}
    if calls and not out.content_text:
        message["content"] = None
    if out.reasoning_text is not None:
        message["reasoning"] = message["reasoning_content"] = out.reasoning_text
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


def full_response(
    meta: ResponseMeta,
    results: list[ChoiceResult],
    prompt_count: int,
    want_logprobs: bool,
    make_output: Callable[[], OutputProcessor] = OutputProcessor,
) -> dict[str, Any]:
    """The chat.completion body: one message per choice."""
    choices = []
    for i, r in enumerate(results):
        out, finish = common.final_output(r, make_output)
        assert r.finished is not None
        choice: dict[str, Any] = {
            "index": i,
            "message": _message(out),
            "logprobs": chat_logprobs(r.logprobs) if want_logprobs else None,
            "finish_reason": finish,
        }
        choice.update(common.stop_fields(r.finished))
        choices.append(choice)
    return common.response_body(meta, "chat.completion", choices, results, prompt_count)


class _ChatChoiceStream(common.ChoiceStream):
    def choice(
        self, out: OutputDelta, logprobs: Sequence[TokenLogprob], finish: str | None
    ) -> dict[str, Any]:
        return {
            "index": self.index,
            "delta": _chat_delta(out),
            "logprobs": chat_logprobs(logprobs) if logprobs else None,
            "finish_reason": finish,
        }


def _chat_delta(out: OutputDelta) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if out.reasoning:
        delta["reasoning"] = delta["reasoning_content"] = out.reasoning
    if out.content:
        delta["content"] = out.content
    if out.tool_calls:
        calls = []
        for call in out.tool_calls:
            item: dict[str, Any] = {"index": call.index}
            function: dict[str, Any] = {"arguments": call.arguments}
            if call.name is not None:
                item["id"], item["type"] = call.id, "function"
                function["name"] = call.name
            item["function"] = function
            calls.append(item)
        delta["tool_calls"] = calls
    return delta


def stream_response(
    engine: EngineClient,
    requests: Sequence[GenerationRequest],
    meta: ResponseMeta,
    opts: StreamOptions,
) -> AsyncIterator[bytes]:
    """chat.completion.chunk SSE: each choice opens with the assistant role."""
    streams = [_ChatChoiceStream(i, opts) for i in range(len(requests))]
    opening = [
        {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
         "finish_reason": None}
        for i in range(len(requests))
    ]  # fmt: skip
    return common.stream_chunks(
        engine, requests, meta, "chat.completion.chunk", streams, opening, opts
    )
