"""Responses ``input`` items and ``tools`` → chat-template messages and function tools.

Items map to template messages one by one, except that a run of assistant output
(an assistant ``message`` and the ``function_call`` items after it) becomes one
assistant turn with ``tool_calls``, as the model produced it::

    {"role": "user", "content": "Weather in Paris?"}          → user
    {"type": "function_call", "call_id": "c1", ...}           → assistant + tool_calls
    {"type": "function_call_output", "call_id": "c1", ...}    → tool
    {"type": "reasoning", ...}                                → (not replayed)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vllm_mlx.api.errors import InvalidRequest

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal", "summary_text"})
MEDIA_PARTS = frozenset({"input_image", "input_file", "input_audio"})


def _text_of(content: Any, param: str) -> str:
    """A message's content: a string, or text parts joined (media is refused)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}.content must be a string or a list of parts", param)
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in MEDIA_PARTS:
            raise InvalidRequest(
                f"This model does not accept {kind} content; send text only.",
                f"{param}.content.{i}",
                code="unsupported_modality",
            )
        if kind not in TEXT_PARTS:
            raise InvalidRequest(
                f"content part type {kind!r} is not supported", f"{param}.content.{i}"
            )
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise InvalidRequest("a text part needs a string 'text'", f"{param}.content.{i}")
        texts.append(text)
    return "".join(texts)


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"{param}.{key} must be a string", f"{param}.{key}")
    return value


def _arguments(text: str) -> Any:
    """Templates expect tool-call arguments as an object; keep text that is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _call_output(item: dict[str, Any], param: str) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return _text_of(output, param)
    raise InvalidRequest(f"{param}.output must be a string or a list of parts", f"{param}.output")


class _Turns:
    """Template messages being built; assistant text and calls merge into one turn."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def _open_assistant(self) -> dict[str, Any]:
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            return last
        turn: dict[str, Any] = {"role": "assistant", "content": ""}
        self.messages.append(turn)
        return turn

    def message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"{param}.role must be one of {', '.join(ROLES)}, not {role!r}", f"{param}.role"
            )
        text = _text_of(item.get("content"), param)
        if role == "assistant":
            turn = self._open_assistant()
            if turn.get("tool_calls"):  # text after calls starts a new turn
                turn = {"role": "assistant", "content": ""}
                self.messages.append(turn)
            turn["content"] += text
        else:
            self.messages.append({"role": ROLES[role], "content": text})

    def function_call(self, item: dict[str, Any], param: str) -> None:
        call_id = _string(item, "call_id", param)
        name = _string(item, "name", param)
        arguments = _string(item, "arguments", param)
        function = {"name": name, "arguments": _arguments(arguments)}
        turn = self._open_assistant()
        # A new list: the turn may be a stored conversation's, which must not change.
        call = {"id": call_id, "type": "function", "function": function}
        turn["tool_calls"] = [*turn.get("tool_calls", ()), call]

    def function_call_output(self, item: dict[str, Any], param: str) -> None:
        call_id = _string(item, "call_id", param)
        output = _call_output(item, param)
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})


def template_messages(
    items: str | Sequence[Any], prefix: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """``input`` as template messages, after ``prefix`` (a stored conversation)."""
    turns = _Turns()
    turns.messages = [dict(m) for m in prefix]
    if isinstance(items, str):
        turns.messages.append({"role": "user", "content": items})
        return turns.messages
    for i, item in enumerate(items):
        param = f"input.{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{param} must be an object", param)
        kind = item.get("type", "message")  # EasyInputMessage has no type
        if kind == "message":
            turns.message(item, param)
        elif kind == "function_call":
            turns.function_call(item, param)
        elif kind == "function_call_output":
            turns.function_call_output(item, param)
        elif kind != "reasoning":  # earlier thinking is not replayed to the model
            raise InvalidRequest(
                f"input item type {kind!r} is not supported; use message, function_call, "
                "function_call_output or reasoning",
                f"{param}.type",
            )
    return turns.messages


def flat_functions(tools: Sequence[Any] | None) -> list[tuple[dict[str, Any], str | None]]:
    """Each function tool with its namespace: ``namespace`` tools (Codex groups its
    sub-agent tools so) are opened; any other type (hosted tools) is a 400 naming it."""
    out: list[tuple[dict[str, Any], str | None]] = []
    others: set[str] = set()
    for tool in tools or ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            out.append((tool, None))
        elif kind == "namespace" and isinstance(tool.get("tools"), list):
            inner = flat_functions(tool["tools"])
            out += [(t, str(tool.get("name"))) for t, _ in inner]
        else:
            others.add(str(kind))
    if others:
        raise InvalidRequest(
            f"tool type {', '.join(repr(t) for t in sorted(others))} is not supported: "
            "this server runs function tools only",
            "tools",
        )
    return out


def namespaces(tools: Sequence[Any] | None) -> dict[str, str]:
    """Function name → the namespace tool it belongs to (output calls name it)."""
    out = {}
    for tool, namespace in flat_functions(tools):
        if namespace is not None and isinstance(tool.get("name"), str):
            out[tool["name"]] = namespace
    return out


def function_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Responses' flat function tools as the chat-template (OpenAI chat) shape."""
    out = []
    for i, (tool, _) in enumerate(flat_functions(tools)):
        name = tool.get("name")
        params = tool.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(name, str) or not name:
            raise InvalidRequest("a function tool needs a 'name'", f"tools.{i}.name")
        if not isinstance(params, dict):
            raise InvalidRequest("parameters must be a JSON schema object", f"tools.{i}.parameters")
        function = {
            "name": name,
            "description": tool.get("description") or "",
            "parameters": params,
        }
        out.append({"type": "function", "function": function})
    return out or None
