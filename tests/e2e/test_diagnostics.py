"""Per-request diagnostics through the official ``openai`` and ``anthropic`` SDKs.

Both levels on chat, completions and /v1/messages, streamed and not; the SDKs keep
the additive field in ``model_extra``. Most requests go to a server started with
``--effective-context-tokens 1024`` (the tiny llama's window is 2048), so the
window's source is ``operator_override`` and the utilization is exact arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.api.test_diagnostics import BASIC_FIELDS
from tests.conftest import LaunchServer
from tests.fixtures.server import openai_client

WINDOW = 1024
MESSAGES: Any = [{"role": "user", "content": "Tell me a story about the sea."}]
PROMPT = "Once upon a time, by the sea,"
BASIC = BASIC_FIELDS  # the reference's field names, as the builder's tests list them
RUNTIME = {
    "mode",
    "deterministic",
    "memory",
    "batch_divergence",
    "repetition",
    "scheduler",
    "preempted",
}
LEVELS = ["basic", "deep"]


@pytest.fixture(scope="module")
def capped(launch_server: LaunchServer) -> str:
    return launch_server("--effective-context-tokens", str(WINDOW)).base_url


@pytest.fixture(scope="module")
def oai(capped: str) -> Any:
    return openai_client(capped)


@pytest.fixture(scope="module")
def claude(capped: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=capped, api_key="x", max_retries=0, timeout=120) as sdk:
        yield sdk


def asked(level: str) -> dict[str, Any]:
    return {"include_diagnostics": True, "diagnostics_level": level, "temperature": 0.0}


def check(
    diagnostics: dict[str, Any] | None,
    level: str,
    prompt: int,
    cached: int,
    generated: int,
    window: int = WINDOW,
) -> dict[str, Any]:
    """The object's layout, and its numbers against the response's own usage."""
    assert isinstance(diagnostics, dict), diagnostics
    assert set(diagnostics) == (BASIC | {"runtime"} if level == "deep" else BASIC)
    assert diagnostics["level"] == level
    assert diagnostics["max_context_tokens"] == 2048
    assert diagnostics["effective_context_tokens"] == window
    source = "operator_override" if window < 2048 else "model_config"
    assert diagnostics["effective_context_source"] == source
    assert (diagnostics["prompt_tokens"], diagnostics["cached_tokens"]) == (prompt, cached)
    assert diagnostics["generated_tokens"] == generated
    assert diagnostics["context_utilization_pct"] == prompt / window * 100
    expected_hit = {"miss"} if cached == 0 else {"exact", "supersequence", "prefix", "lcp"}
    assert diagnostics["cache_hit_type"] in expected_hit
    assert diagnostics["visual_inputs"] == 0
    if level == "deep":
        runtime = diagnostics["runtime"]
        assert set(runtime) == RUNTIME
        assert runtime["mode"] in ("simple", "batched")
        assert runtime["deterministic"] is False
        assert runtime["memory"]["pressure"] in ("normal", "elevated", "critical")
        assert isinstance(runtime["memory"]["action_in_force"], bool)
        assert runtime["batch_divergence"]["status"] == "disabled"
        assert runtime["batch_divergence"]["agreement"] is None
        scheduler = runtime["scheduler"]
        assert set(scheduler) == {"running_at_admission", "waiting_at_admission"}
        assert all(isinstance(v, int) and v >= 0 for v in scheduler.values())
        assert runtime["preempted"] is False
    return diagnostics


def cached_of(usage: Any) -> int:
    details = usage.prompt_tokens_details
    return details.cached_tokens if details is not None else 0


# -- chat completions -----------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_chat(oai: Any, level: str) -> None:
    resp = oai.chat.completions.create(
        model="default", messages=MESSAGES, max_tokens=4, extra_body=asked(level)
    )
    usage = resp.usage
    diagnostics = resp.model_extra["diagnostics"]
    check(diagnostics, level, usage.prompt_tokens, cached_of(usage), usage.completion_tokens)
    if level == "deep":
        repetition = diagnostics["runtime"]["repetition"]
        assert repetition == {"policy": "safe", "override_accepted": None}


@pytest.mark.parametrize("level", LEVELS)
def test_chat_stream_with_usage(oai: Any, level: str) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="default",
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=asked(level),
        )
    )
    carriers = [c for c in chunks if (c.model_extra or {}).get("diagnostics")]
    assert carriers == [chunks[-1]]  # the usage chunk, which closes the stream
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    diagnostics = chunks[-1].model_extra["diagnostics"]
    check(diagnostics, level, usage.prompt_tokens, cached_of(usage), usage.completion_tokens)


@pytest.mark.parametrize("level", LEVELS)
def test_chat_stream_without_usage(oai: Any, level: str) -> None:
    stream = oai.chat.completions.create(
        model="default", messages=MESSAGES, max_tokens=4, stream=True, extra_body=asked(level)
    )
    chunks = list(stream)
    carriers = [c for c in chunks if (c.model_extra or {}).get("diagnostics")]
    assert carriers == [chunks[-1]]  # the chunk with the finish_reason
    assert chunks[-1].choices[0].finish_reason == "length"
    diagnostics = chunks[-1].model_extra["diagnostics"]
    check(diagnostics, level, diagnostics["prompt_tokens"], diagnostics["cached_tokens"], 4)


def test_chat_trusted_override_is_reported(oai: Any) -> None:
    # The test client is loopback and the server binds loopback: the override is honoured.
    extra = {**asked("deep"), "repetition_policy_override": "strict"}
    resp = oai.chat.completions.create(
        model="default", messages=MESSAGES, max_tokens=4, extra_body=extra
    )
    repetition = resp.model_extra["diagnostics"]["runtime"]["repetition"]
    assert repetition == {"policy": "strict", "override_accepted": True}


def test_a_level_alone_asks_and_nothing_asked_adds_nothing(oai: Any) -> None:
    level_only = oai.chat.completions.create(
        model="default",
        messages=MESSAGES,
        max_tokens=2,
        extra_body={"diagnostics_level": "deep"},
    )
    assert level_only.model_extra["diagnostics"]["level"] == "deep"
    plain = oai.chat.completions.create(model="default", messages=MESSAGES, max_tokens=2)
    assert "diagnostics" not in (plain.model_extra or {})


def test_model_window_is_the_source_without_an_override(tiny_server: str) -> None:
    resp = openai_client(tiny_server).chat.completions.create(
        model="default", messages=MESSAGES, max_tokens=2, extra_body=asked("basic")
    )
    usage = resp.usage
    diagnostics = resp.model_extra["diagnostics"]
    check(diagnostics, "basic", usage.prompt_tokens, cached_of(usage), 2, window=2048)


# -- text completions -----------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_completions(oai: Any, level: str) -> None:
    resp = oai.completions.create(
        model="default", prompt=PROMPT, max_tokens=4, extra_body=asked(level)
    )
    usage = resp.usage
    diagnostics = resp.model_extra["diagnostics"]
    check(diagnostics, level, usage.prompt_tokens, cached_of(usage), usage.completion_tokens)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("include_usage", [True, False])
def test_completions_stream(oai: Any, level: str, include_usage: bool) -> None:
    stream = oai.completions.create(
        model="default",
        prompt=PROMPT,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": include_usage},
        extra_body=asked(level),
    )
    chunks = list(stream)
    carriers = [c for c in chunks if (c.model_extra or {}).get("diagnostics")]
    assert carriers == [chunks[-1]]
    diagnostics = chunks[-1].model_extra["diagnostics"]
    if include_usage:
        usage = chunks[-1].usage
        prompt, cached = usage.prompt_tokens, cached_of(usage)
    else:
        assert chunks[-1].choices[0].finish_reason == "length"
        prompt, cached = diagnostics["prompt_tokens"], diagnostics["cached_tokens"]
    check(diagnostics, level, prompt, cached, 4)


def test_completions_with_n_report_the_request_totals(oai: Any) -> None:
    resp = oai.completions.create(
        model="default", prompt=PROMPT, max_tokens=3, n=3, extra_body=asked("deep")
    )
    usage = resp.usage
    assert usage.completion_tokens == 9
    check(resp.model_extra["diagnostics"], "deep", usage.prompt_tokens, cached_of(usage), 9)


# -- /v1/messages ---------------------------------------------------------------------


def anthropic_prompt(usage: Any) -> tuple[int, int]:
    """(prompt tokens, cached tokens): Anthropic splits the prompt in two."""
    cached = usage.cache_read_input_tokens or 0
    return usage.input_tokens + cached, cached


@pytest.mark.parametrize("level", LEVELS)
def test_messages(claude: anthropic.Anthropic, level: str) -> None:
    raw = claude.messages.with_raw_response.create(
        model="default", messages=MESSAGES, max_tokens=4, extra_body=asked(level)
    )
    diagnostics = raw.http_response.json()["diagnostics"]
    message = raw.parse()
    prompt, cached = anthropic_prompt(message.usage)
    check(diagnostics, level, prompt, cached, message.usage.output_tokens)
    # The SDK types Message.diagnostics (Anthropic's own: cache_miss_reason); ours parse
    # into it as extra fields, so a client reads them there.
    assert message.diagnostics is not None
    assert message.diagnostics.model_extra == diagnostics


@pytest.mark.parametrize("level", LEVELS)
def test_messages_stream(claude: anthropic.Anthropic, level: str) -> None:
    events = list(
        claude.messages.create(
            model="default",
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            extra_body=asked(level),
        )
    )
    carriers = [e for e in events if (e.model_extra or {}).get("diagnostics")]
    assert [e.type for e in carriers] == ["message_delta"]
    delta = carriers[0]
    assert delta.type == "message_delta"
    diagnostics = (delta.model_extra or {})["diagnostics"]
    start = events[0]
    assert start.type == "message_start"
    prompt = start.message.usage.input_tokens
    check(diagnostics, level, prompt, diagnostics["cached_tokens"], delta.usage.output_tokens)


# -- unknown levels -------------------------------------------------------------------


def test_unknown_level_is_a_400_on_every_protocol(oai: Any, claude: anthropic.Anthropic) -> None:
    bad = {"include_diagnostics": True, "diagnostics_level": "verbose"}
    with pytest.raises(openai.BadRequestError) as chat_error:
        oai.chat.completions.create(
            model="default", messages=MESSAGES, max_tokens=2, extra_body=bad
        )
    assert "diagnostics_level" in str(chat_error.value)
    with pytest.raises(openai.BadRequestError) as text_error:
        oai.completions.create(model="default", prompt=PROMPT, max_tokens=2, extra_body=bad)
    assert "diagnostics_level" in str(text_error.value)
    with pytest.raises(anthropic.BadRequestError) as messages_error:
        claude.messages.create(model="default", messages=MESSAGES, max_tokens=2, extra_body=bad)
    assert "diagnostics_level" in str(messages_error.value)
