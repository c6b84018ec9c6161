"""The per-client moving window and who counts as a client (no server, a fake clock)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from vllm_mlx.server.middleware import rate_limit
from vllm_mlx.server.middleware.rate_limit import RateLimiter, client_id


class FakeClock:
    """Stands in for the ``time`` module of limits' memory storage and of rate_limit."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("limits.storage.memory.time", fake)
    monkeypatch.setattr(rate_limit, "time", fake)
    return fake


def at(clock: FakeClock, offset: float) -> None:
    clock.now = 1_000_000.0 + offset


def test_the_request_after_n_in_a_window_waits_for_the_oldest(clock: FakeClock) -> None:
    limiter = RateLimiter(3)
    for offset in (0, 10, 20):
        at(clock, offset)
        assert limiter.admit("a") is None
    at(clock, 30)
    assert limiter.admit("a") == 30  # the request of t=0 leaves the window at t=60
    assert limiter.refused == 1


def test_the_window_slides_request_by_request(clock: FakeClock) -> None:
    limiter = RateLimiter(3)
    for offset in (0, 10, 20):
        at(clock, offset)
        limiter.admit("a")
    at(clock, 59.9)
    assert limiter.admit("a") == 1  # 0.1 s left rounds up to a whole second
    at(clock, 60.5)
    assert limiter.admit("a") is None  # t=0 has left; t=10, 20 and 60.5 are in
    at(clock, 61)
    assert limiter.admit("a") == 9  # next to leave: t=10, at t=70
    at(clock, 69.6)
    assert limiter.admit("a") == 1
    at(clock, 70.1)
    assert limiter.admit("a") is None
    assert limiter.refused == 3


def test_refused_requests_take_no_slot(clock: FakeClock) -> None:
    limiter = RateLimiter(2)
    limiter.admit("a")
    limiter.admit("a")
    for offset in range(1, 60):
        at(clock, offset)
        assert limiter.admit("a") == 60 - offset
    at(clock, 60.01)
    assert limiter.admit("a") is None
    assert limiter.refused == 59


def test_clients_have_their_own_windows(clock: FakeClock) -> None:
    limiter = RateLimiter(1)
    assert limiter.admit("a") is None
    assert limiter.admit("a") == 60
    assert limiter.admit("b") is None
    assert limiter.admit("b") == 60
    assert limiter.refused == 2


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def scope(
    headers: dict[str, str], client: tuple[str, int] | None = ("10.0.0.7", 5555)
) -> dict[str, Any]:
    return {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": client,
    }


def test_a_key_identifies_the_client_by_its_hash_whichever_header_carries_it() -> None:
    expected = "key:" + hashlib.sha256(b"sk-secret").hexdigest()[:32]
    assert client_id(scope({"Authorization": "Bearer sk-secret"})) == expected
    assert client_id(scope({"Authorization": "bearer  sk-secret "})) == expected
    assert client_id(scope({"x-api-key": "sk-secret"})) == expected
    assert "sk-secret" not in expected


def test_different_keys_are_different_clients() -> None:
    assert client_id(scope({"x-api-key": "one"})) != client_id(scope({"x-api-key": "two"}))


def test_without_a_key_the_peer_address_identifies_the_client() -> None:
    assert client_id(scope({})) == "addr:10.0.0.7"
    assert client_id(scope({"Authorization": "Basic abc"})) == "addr:10.0.0.7"
    assert client_id(scope({"x-api-key": ""})) == "addr:10.0.0.7"
    assert client_id(scope({}, client=None)) == "addr:unknown"
