"""The bounded LRU store behind previous_response_id, GET and DELETE."""

from __future__ import annotations

import pytest

from vllm_mlx.api.openai.responses.store import ResponseStore, StoredResponse, not_found


def stored(n: int) -> StoredResponse:
    return StoredResponse({"id": f"resp_{n}"}, ({"role": "user", "content": str(n)},))


def test_put_get_delete() -> None:
    store = ResponseStore(capacity=4)
    store.put("a", stored(1))
    assert store.get("a") == stored(1)
    assert store.delete("a") is True
    assert store.get("a") is None and store.delete("a") is False and len(store) == 0


def test_least_recently_used_goes_first() -> None:
    store = ResponseStore(capacity=2)
    store.put("a", stored(1))
    store.put("b", stored(2))
    store.get("a")  # a is now the most recent
    store.put("c", stored(3))
    assert store.get("b") is None
    assert store.get("a") == stored(1) and store.get("c") == stored(3) and len(store) == 2


def test_putting_again_replaces_and_refreshes() -> None:
    store = ResponseStore(capacity=2)
    store.put("a", stored(1))
    store.put("b", stored(2))
    store.put("a", stored(3))
    store.put("c", stored(4))
    assert store.get("a") == stored(3) and store.get("b") is None


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ResponseStore(capacity=0)


def test_not_found_is_an_openai_404() -> None:
    error = not_found("resp_x", "previous_response_id")
    assert error.status == 404 and "resp_x" in error.message
    assert error.openai_body()["error"]["param"] == "previous_response_id"
