"""Output deltas → Responses output items, and the stream events that build them.

One builder serves both answers: a stream sends its events as they come, a plain
response keeps only the items, so the two always hold the same output. Per item::

    response.output_item.added
      message:       content_part.added → output_text.delta… → output_text.done
                     → content_part.done
      reasoning:     content_part.added → reasoning_text.delta… → reasoning_text.done
                     → content_part.done
      function_call: function_call_arguments.delta… → function_call_arguments.done
    response.output_item.done

A new kind of output (thinking, text, a call) closes the open item and opens the next.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from vllm_mlx.api.output import OutputDelta, new_call_id

Event = dict[str, Any]


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class EventLog:
    """Numbers events in the order they are written (``sequence_number``)."""

    def __init__(self) -> None:
        self.next_number = 0

    def event(self, kind: str, **payload: Any) -> Event:
        out = {"type": kind, "sequence_number": self.next_number, **payload}
        self.next_number += 1
        return out


def _text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "reasoning_text", "text": text}


def _logprobs(part: str) -> dict[str, Any]:
    """Text events carry (empty) logprobs; reasoning events have no such field."""
    return {"logprobs": []} if part == "output_text" else {}


class OutputItems:
    """The output items of one response, built delta by delta."""

    def __init__(
        self, log: EventLog, namespaces: Mapping[str, str] | None = None, parallel: bool = True
    ) -> None:
        self.log = log
        self.namespaces = namespaces or {}  # function name → its namespace tool
        self.parallel = parallel  # False: only the first call is kept
        self.items: list[dict[str, Any]] = []  # closed items, in output order
        self._open: dict[str, Any] | None = None
        self._text: list[str] = []  # the open message's or reasoning item's text

    @property
    def _index(self) -> int:
        return len(self.items)

    def add(self, delta: OutputDelta) -> list[Event]:
        events: list[Event] = []
        if delta.reasoning:
            events += self._text_delta("reasoning", delta.reasoning)
        if delta.content:
            events += self._text_delta("message", delta.content)
        for call in delta.tool_calls:
            if not self.parallel and call.index > 0:
                continue  # parallel_tool_calls false: one call per turn
            if call.name is not None or not self._is_open("function_call"):
                events += self._open_item(self._call_item(call.id, call.name or ""))
            if call.arguments:
                assert self._open is not None
                self._open["arguments"] += call.arguments
                more = {"delta": call.arguments}
                events.append(self._item_event("response.function_call_arguments.delta", more))
        return events

    def finish(self, status: str) -> list[Event]:
        """Close the open item with ``status`` (``incomplete`` when cut); a response
        with neither text nor calls still gets an (empty) message."""
        events = self.close(status)
        if not any(i["type"] in ("message", "function_call") for i in self.items):
            events += self._text_delta("message", "")
            events += self.close(status)
        return events

    def close(self, status: str = "completed") -> list[Event]:
        item = self._open
        if item is None:
            return []
        events: list[Event] = []
        if item["type"] == "function_call":
            done = {"arguments": item["arguments"], "name": item["name"]}
            events.append(self._item_event("response.function_call_arguments.done", done))
        else:
            text = "".join(self._text)
            kind = "output_text" if item["type"] == "message" else "reasoning_text"
            done = {"content_index": 0, "text": text, **_logprobs(kind)}
            events.append(self._item_event(f"response.{kind}.done", done))
            part = _text_part(kind, text)
            done = {"content_index": 0, "part": part}
            events.append(self._item_event("response.content_part.done", done))
            item["content"] = [part]
        item["status"] = status
        events.append(
            self.log.event("response.output_item.done", output_index=self._index, item=dict(item))
        )
        self._open = None
        self.items.append(item)
        return events

    def _call_item(self, call_id: str | None, name: str) -> dict[str, Any]:
        item = {
            "id": item_id("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id or new_call_id(),
            "name": name,
            "arguments": "",
        }
        if name in self.namespaces:
            item["namespace"] = self.namespaces[name]
        return item

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["type"] == kind

    def _item_event(self, kind: str, payload: dict[str, Any]) -> Event:
        """An event of the open item."""
        assert self._open is not None
        return self.log.event(kind, item_id=self._open["id"], output_index=self._index, **payload)

    def _open_item(self, item: dict[str, Any]) -> list[Event]:
        events = self.close()
        self._open, self._text = item, []
        added = {**item, "content": []} if item["type"] != "function_call" else dict(item)
        events.append(
            self.log.event("response.output_item.added", output_index=self._index, item=added)
        )
        return events

    def _text_delta(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        part = "output_text" if kind == "message" else "reasoning_text"
        if not self._is_open(kind):
            item: dict[str, Any] = {
                "id": item_id("msg" if kind == "message" else "rs"),
                "type": kind,
                "status": "in_progress",
            }
            if kind == "message":
                item["role"] = "assistant"
            else:
                item["summary"] = []
            events += self._open_item(item)
            added = {"content_index": 0, "part": _text_part(part, "")}
            events.append(self._item_event("response.content_part.added", added))
        if text:
            self._text.append(text)
            delta = {"content_index": 0, "delta": text, **_logprobs(part)}
            events.append(self._item_event(f"response.{part}.delta", delta))
        return events
