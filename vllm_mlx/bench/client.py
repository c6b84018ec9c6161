"""One streaming chat request against an OpenAI-compatible server, timed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.sse import DONE, SSEParser
from vllm_mlx.bench.stats import RequestRecord, chunk_itl_times, chunk_itls, failed

ERROR_BODY_CHARS = 200  # how much of an error response goes into the record


def make_client(cfg: BenchConfig, max_in_flight: int) -> httpx.AsyncClient:
    """One AsyncClient for the whole run, its pool sized to the largest level."""
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    return httpx.AsyncClient(
        base_url=cfg.base_url.rstrip("/"),
        headers=headers,
        limits=limits,
        timeout=httpx.Timeout(cfg.timeout),
    )


def request_body(cfg: BenchConfig, prompt: str) -> dict[str, Any]:
    """The chat completion request sent for one prompt."""
    return chat_body(cfg, [{"role": "user", "content": prompt}])


def chat_body(
    cfg: BenchConfig, messages: Sequence[dict[str, Any]], max_tokens: int | None = None
) -> dict[str, Any]:
    """The chat completion request for a message list (``max_tokens`` overrides the config)."""
    body = {
        "model": cfg.model,
        "messages": list(messages),
        "max_tokens": cfg.max_tokens if max_tokens is None else max_tokens,
        "temperature": cfg.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,  # fixed output length, so levels and runs are comparable
    }
    if cfg.banned_tokens:
        body["logit_bias"] = {str(t): -100 for t in cfg.banned_tokens}
    return body


@dataclass
class _StreamState:
    """What one stream has told so far (mutable, private to one request)."""

    start: float  # perf_counter when the request was sent
    times: list[float] = field(default_factory=list)  # output chunk arrivals
    chunk_tokens: list[int | None] = field(default_factory=list)  # tokens per chunk
    prompt_tokens: int | None = None
    completion_tokens: int | None = None  # last usage.completion_tokens seen
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    text: list[str] = field(default_factory=list)  # streamed content pieces
    done: bool = False  # [DONE] received
    on_output: Callable[[], object] | None = None  # called as each output chunk arrives


@dataclass(frozen=True)
class ChatReply:
    record: RequestRecord  # timing and usage of the request
    text: str  # the assistant content received (for the next turn's history)


async def stream_chat(
    client: httpx.AsyncClient, cfg: BenchConfig, prompt: str, request_id: str
) -> RequestRecord:
    """Send one streaming request and time its chunks; never raises for server faults."""
    reply = await stream_messages(client, cfg, [{"role": "user", "content": prompt}], request_id)
    return reply.record


async def stream_messages(
    client: httpx.AsyncClient,
    cfg: BenchConfig,
    messages: Sequence[dict[str, Any]],
    request_id: str,
    max_tokens: int | None = None,
    on_output: Callable[[], object] | None = None,
) -> ChatReply:
    """Stream one chat request for ``messages``; never raises for server faults.

    ``on_output`` is called (no arguments) as each output chunk arrives, e.g. to
    let a probe act once a stream has started.
    """
    state = _StreamState(start=time.perf_counter(), on_output=on_output)
    body = chat_body(cfg, messages, max_tokens)
    try:
        async with asyncio.timeout(cfg.timeout):
            error = await _consume(client, body, request_id, state)
    except TimeoutError:
        return ChatReply(failed(f"timeout after {cfg.timeout:g}s"), "")
    except httpx.HTTPError as exc:
        return ChatReply(failed(f"broken stream: {type(exc).__name__}: {exc}"), "")
    if error is not None:
        return ChatReply(failed(error), "")
    return ChatReply(_record(state), "".join(state.text))


async def _consume(
    client: httpx.AsyncClient, body: dict[str, Any], request_id: str, state: _StreamState
) -> str | None:
    """Read the response into ``state``; return an error message or None."""
    headers = {"x-request-id": request_id}
    async with client.stream("POST", "/chat/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode("utf-8", "replace")
            return f"HTTP {resp.status_code}: {text[:ERROR_BODY_CHARS]}"
        parser = SSEParser()
        async for text in resp.aiter_text():
            error = _apply_events(parser.feed(text), time.perf_counter(), state)
            if error is not None:
                return error
        error = _apply_events(parser.flush(), time.perf_counter(), state)
        if error is not None:
            return error
    return None if state.done else "broken stream: ended without [DONE]"


def _apply_events(payloads: list[str], now: float, state: _StreamState) -> str | None:
    """Fold the events of one network read into ``state``; return the first error."""
    for payload in payloads:
        # Keep reading after [DONE] (and ignore it) so the connection can be reused.
        error = None if state.done else _apply_event(payload, now, state)
        if error is not None:
            return error
    return None


def _apply_event(payload: str, now: float, state: _StreamState) -> str | None:
    """Fold one SSE payload into ``state``; return an error message or None."""
    if payload.strip() == DONE:
        state.done = True
        return None
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        return f"bad SSE payload: {payload[:ERROR_BODY_CHARS]!r}"
    if not isinstance(chunk, dict):
        return f"bad SSE payload: {payload[:ERROR_BODY_CHARS]!r}"
    if chunk.get("error"):
        return f"error event: {json.dumps(chunk['error'])[:ERROR_BODY_CHARS]}"
    previous = state.completion_tokens
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        _apply_usage(usage, state)
    if _has_output(chunk):
        state.times.append(now)
        state.chunk_tokens.append(_tokens_in_chunk(chunk, previous, state.completion_tokens))
        state.text.extend(_content(chunk))
        if state.on_output is not None:
            state.on_output()
    return None


def _apply_usage(usage: dict[str, Any], state: _StreamState) -> None:
    """Token counts of a usage object; the last one of the stream wins."""
    state.prompt_tokens = usage.get("prompt_tokens", state.prompt_tokens)
    state.completion_tokens = usage.get("completion_tokens", state.completion_tokens)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        state.cached_tokens = details["cached_tokens"]


def _content(chunk: dict[str, Any]) -> list[str]:
    """The assistant text pieces of the first choice (what a client would keep)."""
    choices = chunk.get("choices") or [{}]
    delta = choices[0].get("delta") or {} if isinstance(choices[0], dict) else {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return [content] if isinstance(content, str) and content else []


def _has_output(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries generated text, reasoning or tool-call deltas."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
            return True
        if delta.get("tool_calls"):
            return True
    return False


def _tokens_in_chunk(chunk: dict[str, Any], before: int | None, after: int | None) -> int | None:
    """Tokens carried by one chunk, when logprobs or per-chunk usage say so."""
    counts = [
        len(lp["content"])
        for choice in chunk.get("choices") or []
        if isinstance(lp := choice.get("logprobs"), dict) and isinstance(lp.get("content"), list)
    ]
    if counts:
        return sum(counts)
    if chunk.get("usage") and after is not None:
        return after - (before or 0)  # continuous usage stats: the running total grew by this
    return None


def _record(state: _StreamState) -> RequestRecord:
    """Turn a finished stream into a record (a failure if no output arrived)."""
    if not state.times:
        return failed("no output tokens streamed")
    output = state.completion_tokens
    if output is None:
        known = [n for n in state.chunk_tokens if n is not None]
        output = sum(known) if len(known) == len(state.chunk_tokens) else len(state.times)
    itls, per_token = chunk_itls(state.times, state.chunk_tokens, state.completion_tokens)
    return RequestRecord(
        ok=True,
        ttft_s=state.times[0] - state.start,
        e2e_s=state.times[-1] - state.start,
        itl_s=itls,
        itl_per_token=per_token,
        prompt_tokens=state.prompt_tokens,
        output_tokens=output,
        cached_tokens=state.cached_tokens,
        token_times=tuple(state.times),
        itl_times=chunk_itl_times(state.times, state.chunk_tokens),
    )
