"""OpenAI rendering (chat.py, completions.py, common.py): usage, logprobs, bodies, SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from vllm_mlx.api.generation import ChoiceResult
from vllm_mlx.api.openai import chat, common, completions
from vllm_mlx.api.openai.common import ResponseMeta, StreamOptions
from vllm_mlx.engine.types import (
    EngineError,
    EngineEvent,
    ErrorKind,
    Finished,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

CHAT = ResponseMeta("chatcmpl-1", "tiny", 1700000000)
TEXT = ResponseMeta("cmpl-1", "tiny", 1700000000)


def lp(token: str, logprob: float, *top: tuple[str, float]) -> TokenLogprob:
    alts = tuple(TopLogprob(i, t, v) for i, (t, v) in enumerate(top))
    return TokenLogprob(len(token), token, logprob, alts)


# -- usage ----------------------------------------------------------------------------


def test_usage_single_choice() -> None:
    assert common.usage_body([Usage(7, 3, 2)], 1) == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


def test_usage_counts_the_prompt_once_for_n_choices() -> None:
    body = common.usage_body([Usage(7, 3, 4), Usage(7, 5, 4), Usage(7, 1, 4)], 1)
    assert (body["prompt_tokens"], body["completion_tokens"], body["total_tokens"]) == (7, 9, 16)
    assert body["prompt_tokens_details"]["cached_tokens"] == 4


def test_usage_several_prompts_with_n_choices() -> None:
    usages = [Usage(3, 1, 1), Usage(3, 2, 1), Usage(5, 4, 0), Usage(5, 8, 0)]
    body = common.usage_body(usages, 2)
    assert (body["prompt_tokens"], body["completion_tokens"], body["total_tokens"]) == (8, 15, 23)
    assert body["prompt_tokens_details"]["cached_tokens"] == 1


def test_usage_several_prompts_one_choice_each() -> None:
    body = common.usage_body([Usage(3, 1), Usage(5, 2), Usage(4, 3)], 3)
    assert (body["prompt_tokens"], body["completion_tokens"]) == (12, 6)


def test_usage_empty() -> None:
    assert common.usage_body([], 1)["total_tokens"] == 0


# -- logprobs ---------------------------------------------------------------------------


def test_chat_logprobs_shape() -> None:
    items = [lp("Hi", -0.1, ("Hi", -0.1), ("Yo", -2.5)), lp("🙂", -1.0)]
    assert chat.chat_logprobs(items) == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -2.5, "bytes": [89, 111]},
                ],
            },
            {
                "token": "🙂",
                "logprob": -1.0,
                "bytes": [0xF0, 0x9F, 0x99, 0x82],
                "top_logprobs": [],
            },
        ]
    }


def test_chat_logprobs_empty() -> None:
    assert chat.chat_logprobs([]) == {"content": []}


def test_completion_logprobs_shape_and_offsets() -> None:
    items = [lp("The", -0.5, ("The", -0.5), ("A", -1.5)), lp(" sky", -0.25, (" sky", -0.25))]
    assert completions.completion_logprobs(items, 0) == {
        "tokens": ["The", " sky"],
        "token_logprobs": [-0.5, -0.25],
        "top_logprobs": [{"The": -0.5, "A": -1.5}, {" sky": -0.25}],
        "text_offset": [0, 3],
    }
    assert completions.completion_logprobs(items, 10)["text_offset"] == [10, 13]


# -- full responses -----------------------------------------------------------------------


def _result(
    text: str,
    reason: FinishReason,
    usage: Usage,
    logprobs: Sequence[TokenLogprob] = (),
    stop: str | None = None,
) -> ChoiceResult:
    return ChoiceResult(
        text, [1] * usage.completion_tokens, list(logprobs), Finished(reason, usage, stop)
    )


def test_full_chat_response() -> None:
    results = [
        _result("Hello", FinishReason.STOP, Usage(4, 2), stop="\n\n"),
        _result("Hey there", FinishReason.LENGTH, Usage(4, 3)),
    ]
    body = chat.full_response(CHAT, results, 1, want_logprobs=False)
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": "\n\n",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "Hey there"},
                "logprobs": None,
                "finish_reason": "length",
            },
        ],
        "usage": {
            "prompt_tokens": 4,
            "completion_tokens": 5,
            "total_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_full_chat_response_with_logprobs() -> None:
    results = [_result("Hi", FinishReason.STOP, Usage(4, 1), [lp("Hi", -0.2)])]
    choice = chat.full_response(CHAT, results, 1, want_logprobs=True)["choices"][0]
    assert choice["logprobs"]["content"][0]["token"] == "Hi"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        (FinishReason.STOP, "stop"),
        (FinishReason.LENGTH, "length"),
        (FinishReason.ABORT, "stop"),
        (FinishReason.TIMEOUT, "length"),
    ],
)
def test_finish_reason_mapping(reason: FinishReason, finish: str) -> None:
    body = completions.full_response(TEXT, [_result("x", reason, Usage(1, 1))], 1, False)
    assert body["choices"][0]["finish_reason"] == finish
    assert "stop_reason" not in body["choices"][0]


def test_full_completion_response_with_echo_and_two_prompts() -> None:
    results = [
        _result(" one", FinishReason.LENGTH, Usage(2, 1), [lp(" one", -0.1)]),
        _result(" two", FinishReason.LENGTH, Usage(3, 1), [lp(" two", -0.3)]),
    ]
    body = completions.full_response(TEXT, results, 2, True, echo=("Hi", "Bye"))
    assert body["object"] == "text_completion"
    first, second = body["choices"]
    assert (first["index"], first["text"]) == (0, "Hi one")
    assert (second["index"], second["text"]) == (1, "Bye two")
    assert first["logprobs"]["text_offset"] == [2]
    assert second["logprobs"]["text_offset"] == [3]
    assert second["logprobs"]["tokens"] == [" two"]
    assert body["usage"]["prompt_tokens"] == 5
    assert body["usage"]["completion_tokens"] == 2


def test_full_completion_without_logprobs() -> None:
    body = completions.full_response(TEXT, [_result("x", FinishReason.STOP, Usage(1, 1))], 1, False)
    assert body["choices"][0] == {
        "index": 0,
        "text": "x",
        "logprobs": None,
        "finish_reason": "stop",
    }


# -- SSE -------------------------------------------------------------------------------------


def test_sse_framing() -> None:
    assert common.sse({"a": 1}) == b'data: {"a": 1}\n\n'
    assert common.sse("[DONE]") == b"data: [DONE]\n\n"
    assert common.sse({"t": "é🙂"}) == 'data: {"t": "é🙂"}\n\n'.encode()


class FakeEngine:
    """Plays scripted events per request id; a delay before each event orders them."""

    def __init__(self, script: dict[str, list[tuple[float, EngineEvent]]]) -> None:
        self.script = script

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        for delay, event in self.script[request.request_id]:
            await asyncio.sleep(delay)
            yield event


def _requests(n: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            request_id=f"r-{i}", prompt_token_ids=(1, 2), sampling=SamplingParams(max_tokens=8)
        )
        for i in range(n)
    ]


def _opts(**kwargs: Any) -> StreamOptions:
    defaults: dict[str, Any] = {
        "include_usage": False,
        "want_logprobs": False,
        "prompt_count": 1,
        "timeout_s": 5.0,
    }
    return StreamOptions(**{**defaults, **kwargs})


def _stream(
    script: dict[str, list[tuple[float, EngineEvent]]],
    meta: ResponseMeta,
    opts: StreamOptions,
    echo: tuple[str, ...] = (),
) -> list[dict[str, Any] | str]:
    """CHAT streams chat.completion chunks, TEXT text_completion chunks."""

    async def run() -> bytes:
        engine: Any = FakeEngine(script)
        requests = _requests(len(script))
        if meta is CHAT:
            chunks = chat.stream_response(engine, requests, meta, opts)
        else:
            chunks = completions.stream_response(engine, requests, meta, opts, echo)
        return b"".join([chunk async for chunk in chunks])

    raw = asyncio.run(run())
    assert raw.endswith(b"\n\n")
    frames = raw.decode().split("\n\n")[:-1]
    out: list[dict[str, Any] | str] = []
    for frame in frames:
        assert frame.startswith("data: ")
        data = frame.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


DONE = Finished(FinishReason.STOP, Usage(2, 2))


def test_chat_stream() -> None:
    script: dict[str, list[tuple[float, EngineEvent]]] = {
        "r-0": [
            (0, TokenDelta("Hel", (1,))),
            (0, TokenDelta("", (2,))),  # held text: no chunk
            (0, TokenDelta("lo", (3,))),
            (0, DONE),
        ]
    }
    frames = _stream(script, CHAT, _opts())
    assert frames[-1] == "[DONE]"
    chunks = [f for f in frames[:-1] if isinstance(f, dict)]
    assert len(chunks) == len(frames) - 1
    for chunk in chunks:
        assert chunk["id"] == "chatcmpl-1"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "tiny"
        assert chunk["created"] == 1700000000
        assert "usage" not in chunk
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]


def test_chat_stream_with_usage_and_n_choices() -> None:
    script: dict[str, list[tuple[float, EngineEvent]]] = {
        "r-0": [(0, TokenDelta("a", (1,))), (0.01, Finished(FinishReason.LENGTH, Usage(2, 1)))],
        "r-1": [(0, TokenDelta("b", (1,))), (0.02, Finished(FinishReason.STOP, Usage(2, 3), "X"))],
    }
    frames = _stream(script, CHAT, _opts(include_usage=True))
    assert frames[-1] == "[DONE]"
    chunks = [f for f in frames if isinstance(f, dict)]
    # Every chunk carries "usage": null; the last one carries the totals and no choices.
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 2
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    roles = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert [c["choices"][0]["index"] for c in roles] == [0, 1]
    choices = [c["choices"][0] for c in chunks[:-1]]
    finals = {c["index"]: c for c in choices if c["finish_reason"]}
    assert finals[0]["finish_reason"] == "length"
    assert finals[1]["finish_reason"] == "stop"
    assert finals[1]["stop_reason"] == "X"
    for index, text in ((0, "a"), (1, "b")):
        parts = [c["delta"].get("content", "") for c in choices if c["index"] == index]
        assert "".join(parts) == text


def test_chat_stream_logprobs() -> None:
    script: dict[str, list[tuple[float, EngineEvent]]] = {
        "r-0": [(0, TokenDelta("", (1,), (lp("\ufffd", -0.5),))), (0, DONE)]
    }
    frames = _stream(script, CHAT, _opts(want_logprobs=True))
    chunks = [f for f in frames if isinstance(f, dict)]
    # A delta with logprobs but no text still goes out when logprobs are wanted.
    assert chunks[1]["choices"][0]["delta"] == {}
    assert chunks[1]["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.5
    assert chunks[2]["choices"][0]["logprobs"] is None


def test_completion_stream_with_echo() -> None:
    script: dict[str, list[tuple[float, EngineEvent]]] = {
        "r-0": [(0, TokenDelta(" world", (1,))), (0, DONE)]
    }
    frames = _stream(script, TEXT, _opts(), echo=("Hello",))
    chunks = [f for f in frames if isinstance(f, dict)]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["text"] for c in chunks] == ["Hello", " world", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert frames[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("event", "status_type", "message"),
    [
        (EngineError(ErrorKind.INTERNAL, "boom"), "server_error", "boom"),
        (EngineError(ErrorKind.INVALID_REQUEST, "too long"), "invalid_request_error", "too long"),
        (Finished(FinishReason.TIMEOUT, Usage(2, 1)), "timeout_error", "timed out after 5 s"),
    ],
)
def test_stream_error_becomes_error_chunk(
    event: EngineEvent, status_type: str, message: str
) -> None:
    script: dict[str, list[tuple[float, EngineEvent]]] = {
        "r-0": [(0, TokenDelta("partial", (1,))), (0, event)]
    }
    frames = _stream(script, CHAT, _opts(include_usage=True))
    assert frames[-1] == "[DONE]"
    error = frames[-2]
    assert isinstance(error, dict)
    assert error["error"]["type"] == status_type
    assert message in error["error"]["message"]
    assert not any(isinstance(f, dict) and f.get("choices") == [] for f in frames)  # no usage


def test_stream_usage_when_choices_finish_out_of_order() -> None:
    def finish(delay: float, prompt: int) -> list[tuple[float, EngineEvent]]:
        return [(delay, Finished(FinishReason.LENGTH, Usage(prompt, 1)))]

    # Two prompts (3 and 5 tokens), n=2: requests 0,1 use prompt A; 2,3 prompt B.
    # They finish in the order 0, 2, 1, 3.
    delays = {"r-0": (0.0, 3), "r-1": (0.04, 3), "r-2": (0.02, 5), "r-3": (0.06, 5)}
    script = {rid: finish(delay, prompt) for rid, (delay, prompt) in delays.items()}
    frames = _stream(script, TEXT, _opts(include_usage=True, prompt_count=2))
    usage = frames[-2]
    assert isinstance(usage, dict)
    assert usage["usage"]["prompt_tokens"] == 8


def test_streamed_text_offset_is_cumulative() -> None:
    script: dict[str, list[tuple[float, EngineEvent]]] = {
        "r-0": [
            (0, TokenDelta("ab", (1,), (lp("ab", -0.1),))),
            (0, TokenDelta("cd", (2,), (lp("cd", -0.2),))),
            (0, DONE),
        ]
    }
    frames = _stream(script, TEXT, _opts(want_logprobs=True))
    chunks = [f for f in frames if isinstance(f, dict)]
    assert [c["choices"][0]["logprobs"]["text_offset"] for c in chunks[:2]] == [[0], [2]]


# -- a loop stopped by the repetition detector ------------------------------------------

LOOP = Finished(FinishReason.STOP, Usage(2, 8), None, "repetition_detected", "token_run_len_8")


@pytest.mark.parametrize("meta", [CHAT, TEXT], ids=["chat", "completion"])
def test_full_response_names_a_detected_loop(meta: ResponseMeta) -> None:
    result = ChoiceResult("ab" * 4, [1] * 8, [], LOOP)
    endpoint: Any = chat if meta is CHAT else completions
    choice = endpoint.full_response(meta, [result], 1, want_logprobs=False)["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] == "repetition_detected"
    assert choice["stop_reason_detail"] == "token_run_len_8"


@pytest.mark.parametrize("meta", [CHAT, TEXT], ids=["chat", "completion"])
def test_stream_names_a_detected_loop_on_the_final_chunk_only(meta: ResponseMeta) -> None:
    script: dict[str, list[tuple[float, EngineEvent]]] = {
        "r-0": [(0, TokenDelta("ab", (1,))), (0, LOOP)]
    }
    chunks = [f for f in _stream(script, meta, _opts()) if isinstance(f, dict)]
    *earlier, last = [c["choices"][0] for c in chunks]
    assert last["finish_reason"] == "stop"
    assert (last["stop_reason"], last["stop_reason_detail"]) == (
        "repetition_detected",
        "token_run_len_8",
    )
    assert all("stop_reason" not in c and "stop_reason_detail" not in c for c in earlier)


def test_other_stops_have_no_stop_reason_detail() -> None:
    results = [
        _result("a", FinishReason.STOP, Usage(1, 1), stop="\n"),
        _result("b", FinishReason.STOP, Usage(1, 1)),
    ]
    with_stop, plain = chat.full_response(CHAT, results, 1, False)["choices"]
    assert with_stop["stop_reason"] == "\n" and "stop_reason_detail" not in with_stop
    assert "stop_reason" not in plain and "stop_reason_detail" not in plain


# -- diagnostics on streams -----------------------------------------------------------


def _diagnose(finished: Sequence[Finished]) -> dict[str, Any]:
    return {"generated_tokens": sum(f.usage.completion_tokens for f in finished)}


def _two_choices() -> dict[str, list[tuple[float, EngineEvent]]]:
    # Choice 1 finishes first, choice 0 last.
    return {
        "r-0": [(0, TokenDelta("a", (1,))), (0.03, Finished(FinishReason.LENGTH, Usage(2, 1)))],
        "r-1": [(0, TokenDelta("b", (1,))), (0.01, Finished(FinishReason.STOP, Usage(2, 3)))],
    }


@pytest.mark.parametrize("meta", [CHAT, TEXT])
def test_stream_diagnostics_ride_on_the_usage_chunk(meta: ResponseMeta) -> None:
    frames = _stream(_two_choices(), meta, _opts(include_usage=True, diagnostics=_diagnose))
    chunks = [f for f in frames if isinstance(f, dict)]
    assert [c for c in chunks if "diagnostics" in c] == [chunks[-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert chunks[-1]["diagnostics"] == {"generated_tokens": 4}


@pytest.mark.parametrize("meta", [CHAT, TEXT])
def test_stream_diagnostics_without_usage_ride_on_the_last_finish(meta: ResponseMeta) -> None:
    frames = _stream(_two_choices(), meta, _opts(diagnostics=_diagnose))
    chunks = [f for f in frames if isinstance(f, dict)]
    carriers = [c for c in chunks if "diagnostics" in c]
    assert carriers == [chunks[-1]]
    assert carriers[0]["choices"][0]["index"] == 0  # the choice that finished last
    assert carriers[0]["choices"][0]["finish_reason"] == "length"
    assert carriers[0]["diagnostics"] == {"generated_tokens": 4}


def test_stream_without_diagnostics_has_none() -> None:
    frames = _stream(_two_choices(), CHAT, _opts(include_usage=True))
    assert not any(isinstance(f, dict) and "diagnostics" in f for f in frames)
