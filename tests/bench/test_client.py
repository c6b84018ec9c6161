"""Folding stream events into a request record (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vllm_mlx.bench.client import (
    _apply_events,
    _record,
    _StreamState,
    chat_body,
    request_body,
)
from vllm_mlx.bench.config import BenchConfig


def _chunk(content: str | None = None, **extra: Any) -> str:
    delta = {} if content is None else {"content": content}
    return json.dumps({"choices": [{"index": 0, "delta": delta, **extra}]})


def _usage(prompt: int, completion: int) -> str:
    return json.dumps({"choices": [], "usage": {"prompt_tokens": prompt,
                                                "completion_tokens": completion}})  # fmt: skip


def test_request_body_asks_for_a_fixed_length_stream_with_usage() -> None:
    body = request_body(BenchConfig(model="m", max_tokens=9, temperature=0.3), "hi")
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["max_tokens"], body["temperature"], body["ignore_eos"]) == (
        "m", 9, 0.3, True,
    )  # fmt: skip


def test_role_chunk_does_not_count_as_first_token() -> None:
    state = _StreamState(start=0.0)
    assert _apply_events([_chunk("", role="assistant")], 0.1, state) is None
    assert _apply_events([_chunk("a")], 0.3, state) is None
    assert _apply_events([_chunk("b"), _chunk("c")], 0.5, state) is None
    assert _apply_events([_usage(12, 3), "[DONE]"], 0.6, state) is None
    record = _record(state)
    assert record.ok and record.ttft_s == pytest.approx(0.3) and record.e2e_s == 0.5
    assert (record.prompt_tokens, record.output_tokens) == (12, 3)
    assert record.itl_s == pytest.approx((0.2, 0.0))


def test_logprobs_give_exact_tokens_per_chunk() -> None:
    state = _StreamState(start=0.0)
    two = {"content": [{"token": "a", "logprob": 0.0}, {"token": "b", "logprob": 0.0}]}
    _apply_events([_chunk("a", logprobs=two)], 0.1, state)
    _apply_events([_chunk("ab", logprobs=two)], 0.3, state)
    _apply_events(["[DONE]"], 0.3, state)
    record = _record(state)
    assert record.output_tokens == 4 and record.itl_per_token
    assert record.itl_s == pytest.approx((0.1, 0.1))


def test_continuous_usage_gives_tokens_per_chunk() -> None:
    state = _StreamState(start=0.0)
    for now, total in ((0.1, 1), (0.4, 4)):
        payload = json.loads(_chunk("x"))
        payload["usage"] = {"prompt_tokens": 5, "completion_tokens": total}
        _apply_events([json.dumps(payload)], now, state)
    assert state.chunk_tokens == [1, 3]
    assert _record(state).itl_s == pytest.approx((0.1, 0.1, 0.1))


def test_reasoning_and_tool_call_deltas_count_as_output() -> None:
    state = _StreamState(start=0.0)
    reasoning = json.dumps({"choices": [{"delta": {"reasoning_content": "hm"}}]})
    tool = json.dumps({"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]})
    _apply_events([reasoning, tool], 0.2, state)
    assert state.times == [0.2, 0.2]


def test_errors_in_the_stream() -> None:
    assert "error event" in (
        _apply_events(['{"error": {"message": "x"}}'], 0, _StreamState(0)) or ""
    )
    assert "bad SSE payload" in (_apply_events(["{not json"], 0, _StreamState(0)) or "")
    assert "bad SSE payload" in (_apply_events(["[1, 2]"], 0, _StreamState(0)) or "")
    assert _record(_StreamState(start=0.0)).error == "no output tokens streamed"


def test_events_after_done_are_ignored() -> None:
    state = _StreamState(start=0.0)
    assert _apply_events([_chunk("a"), "[DONE]", "{garbage"], 0.1, state) is None
    assert state.done and state.times == [0.1]


def test_chat_body_sends_the_messages_and_may_override_max_tokens() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    body = chat_body(BenchConfig(max_tokens=9), messages, max_tokens=1)
    assert body["messages"] == messages and body["max_tokens"] == 1
    assert chat_body(BenchConfig(max_tokens=9), messages)["max_tokens"] == 9


def test_cached_tokens_and_reply_text_are_kept() -> None:
    state = _StreamState(start=0.0)
    usage = {"prompt_tokens": 40, "completion_tokens": 2,
             "prompt_tokens_details": {"cached_tokens": 32}}  # fmt: skip
    _apply_events([_chunk("", role="assistant"), _chunk("Hel"), _chunk("lo")], 0.1, state)
    _apply_events([json.dumps({"choices": [], "usage": usage}), "[DONE]"], 0.2, state)
    assert "".join(state.text) == "Hello"
    record = _record(state)
    assert (record.prompt_tokens, record.cached_tokens, record.output_tokens) == (40, 32, 2)


def test_cached_tokens_are_absent_when_usage_has_no_details() -> None:
    state = _StreamState(start=0.0)
    usage = {"prompt_tokens": 4, "completion_tokens": 1, "prompt_tokens_details": None}
    _apply_events([_chunk("a"), json.dumps({"choices": [], "usage": usage}), "[DONE]"], 0.1, state)
    assert _record(state).cached_tokens is None
    assert _record(state).turn == 1
