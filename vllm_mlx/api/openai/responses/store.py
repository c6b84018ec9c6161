"""Stored responses for ``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}``.

In memory and bounded: the least recently used response goes first. Each entry keeps
the conversation so far as template messages, so a follow-up turn sends only its new
items and renders the same prompt prefix (which the prefix cache then serves).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from vllm_mlx.api.errors import APIError, ErrorType

DEFAULT_CAPACITY = 512  # responses kept; each holds its whole conversation


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]  # the response object, as GET returns it
    conversation: tuple[dict[str, Any], ...]  # input and output turns (no instructions)


class ResponseStore:
    """An LRU map of response id → stored response (used from the event loop only)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response_id: str, stored: StoredResponse) -> None:
        self._entries[response_id] = stored
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        stored = self._entries.get(response_id)
        if stored is not None:
            self._entries.move_to_end(response_id)
        return stored

    def delete(self, response_id: str) -> bool:
        return self._entries.pop(response_id, None) is not None


def response_store(request: Request) -> ResponseStore:
    """The app's store, made on first use (no state outlives the app)."""
    store: ResponseStore | None = getattr(request.app.state, "responses", None)
    if store is None:
        store = request.app.state.responses = ResponseStore()
    return store


def not_found(response_id: str, param: str | None = None) -> APIError:
    return APIError(
        f"Response with id '{response_id}' not found.",
        ErrorType.NOT_FOUND,
        param=param,
        code="response_not_found",
    )
