"""Who may override the repetition policy: the trust rule and its counters."""

from __future__ import annotations

import logging

import pytest

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.trust import RepetitionDecision, is_loopback, is_trusted, repetition_mode
from vllm_mlx.config import EngineConfig, PolicyConfig, RepetitionPolicy

REMOTE = "203.0.113.7"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", [None, "", "0.0.0.0", "::", REMOTE, "10.0.0.2", "::ffff:10.0.0.2", "example.com"]
)
def test_hosts_that_are_not_loopback(host: str | None) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("client", ["127.0.0.1", REMOTE, None])
@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_a_server_with_a_key_trusts_every_request_that_reaches_a_route(
    client: str | None, bind: str
) -> None:
    assert is_trusted(client, bind, api_key_set=True, trust_when_no_auth=False)


@pytest.mark.parametrize("client", ["127.0.0.1", REMOTE, None])
@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_the_flag_trusts_everyone_without_a_key(client: str | None, bind: str) -> None:
    assert is_trusted(client, bind, api_key_set=False, trust_when_no_auth=True)


@pytest.mark.parametrize(
    ("client", "bind", "trusted"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "::1", True),
        ("127.0.0.1", "localhost", True),
        ("127.0.0.1", "0.0.0.0", False),  # reachable from other machines
        ("127.0.0.1", "::", False),
        ("127.0.0.1", "", False),
        (REMOTE, "127.0.0.1", False),  # e.g. forwarded by a local proxy
        (REMOTE, "0.0.0.0", False),
        (None, "127.0.0.1", False),  # no client address known
    ],
)
def test_without_key_or_flag_only_loopback_on_loopback_is_trusted(
    client: str | None, bind: str, trusted: bool
) -> None:
    assert is_trusted(client, bind, api_key_set=False, trust_when_no_auth=False) is trusted


def _ctx(bind: str = "0.0.0.0", **policy: object) -> ServingContext:
    return ServingContext(
        engine=None,  # type: ignore[arg-type]
        tokenizer=None,  # type: ignore[arg-type]
        model_id="tiny",
        model_context_length=64,
        engine_config=EngineConfig(),
        policy=PolicyConfig(**policy),  # type: ignore[arg-type]
        bind_host=bind,
    )


def test_no_override_is_the_server_mode_and_counts_nothing() -> None:
    ctx = _ctx(repetition_policy=RepetitionPolicy.OFF)
    assert repetition_mode(ctx, None, REMOTE, "r") == RepetitionDecision(RepetitionPolicy.OFF)
    assert (ctx.repetition_overrides.accepted, ctx.repetition_overrides.denied) == (0, 0)


def test_a_trusted_override_is_honoured_and_counted() -> None:
    ctx = _ctx(api_key="k")
    decision = repetition_mode(ctx, "strict", REMOTE, "r")
    assert decision == RepetitionDecision(RepetitionPolicy.STRICT, override_accepted=True)
    assert (ctx.repetition_overrides.accepted, ctx.repetition_overrides.denied) == (1, 0)


def test_an_untrusted_override_is_ignored_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = _ctx(repetition_policy=RepetitionPolicy.SAFE)
    with caplog.at_level(logging.INFO, logger="vllm_mlx.api.trust"):
        decision = repetition_mode(ctx, "strict", "127.0.0.1", "req-1")
    assert decision == RepetitionDecision(RepetitionPolicy.SAFE, override_accepted=False)
    assert (ctx.repetition_overrides.accepted, ctx.repetition_overrides.denied) == (0, 1)
    notes = [r for r in caplog.records if r.name == "vllm_mlx.api.trust"]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    assert "req-1" in notes[0].getMessage() and "strict" in notes[0].getMessage()


def test_loopback_client_of_a_loopback_server_may_override() -> None:
    ctx = _ctx(bind="127.0.0.1", repetition_policy=RepetitionPolicy.STRICT)
    assert repetition_mode(ctx, "safe", "127.0.0.1", "r").mode is RepetitionPolicy.SAFE
    assert ctx.repetition_overrides.accepted == 1
