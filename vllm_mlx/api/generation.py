"""Protocol-neutral helpers: run n sequences, merge their events, collect results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import APIError, RequestTimedOut, from_engine_error
from vllm_mlx.api.output import OutputProcessor, ToolMode, processor_factory
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import (
    EngineError,
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    ImageInput,
    LogitsProcessorFactory,
    TokenDelta,
    TokenLogprob,
    Usage,
)


@dataclass(frozen=True)
class PreparedPrompt:
    """A request turned into token ids plus how to constrain and parse its output."""

    prompts: list[list[int]]
    logits_processors: tuple[LogitsProcessorFactory, ...] = ()
    output: Callable[[], OutputProcessor] = OutputProcessor
    skip_special_tokens: bool = True
    images: tuple[ImageInput, ...] = ()  # in prompt order; every sequence of the prompt gets them


def prepared_chat(
    ctx: ServingContext,
    text: str,
    tools: list[dict[str, Any]] | None,
    mode: ToolMode,
    processors: Sequence[LogitsProcessorFactory],
    max_thinking_tokens: int | None = None,
) -> PreparedPrompt:
    """A rendered conversation, tokenized, with the parsers its tool mode needs.

    ``max_thinking_tokens`` is the request's thinking budget (the server's may be smaller).
    """
    ctx.check_text_fits(text)
    return PreparedPrompt(
        [ctx.tokenizer.encode(text, add_special_tokens=False)],
        tuple(processors),
        processor_factory(
            ctx.agent, ctx.tokenizer.special_tokens, tools, mode, text, max_thinking_tokens
        ),
        # Some families write their call markers as special tokens.
        skip_special_tokens=mode is not ToolMode.AUTO,
    )


async def merged_events(
    engine: EngineClient, requests: Sequence[GenerationRequest]
) -> AsyncIterator[tuple[int, EngineEvent]]:
    """Events of several sequences as (index, event), in arrival order."""
    if len(requests) == 1:
        async for event in engine.generate(requests[0]):
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, EngineEvent]] = asyncio.Queue()

    async def pump(index: int, request: GenerationRequest) -> None:
        async for event in engine.generate(request):
            await queue.put((index, event))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    remaining = len(requests)
    try:
        while remaining:
            index, event = await queue.get()
            remaining -= isinstance(event, Finished | EngineError)
            yield index, event
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def request_usage(usages: Sequence[Usage], prompt_count: int) -> Usage:
    """A request's usage over its sequences (choice order, prompt by prompt).

    Prompt and cached tokens count once per prompt (its first sequence's), completion
    tokens once per sequence.
    """
    per_prompt = max(1, len(usages) // max(1, prompt_count))
    firsts = usages[::per_prompt]
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in firsts),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cached_tokens=sum(u.cached_tokens for u in firsts),
    )


def raise_for_event(event: EngineEvent, timeout_s: float) -> None:
    """Turn a failure event into the API error it stands for."""
    if isinstance(event, EngineError):
        raise from_engine_error(event)
    if isinstance(event, Finished) and event.reason is FinishReason.TIMEOUT:
        raise RequestTimedOut(timeout_s)


@dataclass
class ChoiceResult:
    """Everything one sequence produced, for a non-streaming response."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finished: Finished | None = None


async def collect(
    engine: EngineClient, requests: Sequence[GenerationRequest], timeout_s: float
) -> list[ChoiceResult]:
    results = [ChoiceResult() for _ in requests]
    parts: list[list[str]] = [[] for _ in requests]
    async for index, event in merged_events(engine, requests):
        raise_for_event(event, timeout_s)
        if isinstance(event, TokenDelta):
            parts[index].append(event.text)
            results[index].token_ids.extend(event.token_ids)
            results[index].logprobs.extend(event.logprobs)
        elif isinstance(event, Finished):
            results[index].finished = event
    for result, chunks in zip(results, parts, strict=True):
        result.text = "".join(chunks)
        if result.finished is None:  # the engine always finishes; guard the invariant
            raise APIError("generation ended without a final event")
    return results
