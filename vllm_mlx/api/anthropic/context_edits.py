"""Anthropic context-management edits, applied to the template messages.

Claude Code sends ``context_management: {"edits": [...]}``. Two edits exist:

- ``clear_thinking_20251015`` drops thinking of earlier turns. Earlier thinking is
  never replayed into our prompts, so it holds by construction.
- ``clear_tool_uses_20250919``: once the prompt passes ``trigger`` (default 100,000
  input tokens), the results of all but the last ``keep`` tool uses (default 3) are
  replaced by a placeholder; ``exclude_tools`` are never cleared and
  ``clear_tool_inputs`` also empties the cleared calls' arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_mlx.api.anthropic.protocol import CLEAR_TOOL_USES, ContextEdit, ContextManagement
from vllm_mlx.api.errors import InvalidRequest

CLEARED = "[tool result cleared to save context]"
DEFAULT_TRIGGER_TOKENS = 100_000
DEFAULT_KEEP_TOOL_USES = 3

Messages = list[dict[str, Any]]


def apply_edits(
    messages: Messages, management: ContextManagement | None, count_tokens: Callable[[], int]
) -> Messages:
    """``messages`` with the tool-use edits applied; ``count_tokens`` measures them as sent."""
    edits = [e for e in (management.edits if management else []) if e.type == CLEAR_TOOL_USES]
    for edit in edits:
        keep = _keep(edit)  # checked before the trigger, so a bad edit always fails
        if keep is not None and _triggered(edit, messages, count_tokens):
            messages = _clear_tool_uses(messages, edit, keep)
    return messages


def _value(spec: dict[str, Any] | None, kind: str, default: int, param: str) -> int:
    if spec is None:
        return default
    value = spec.get("value")
    if spec.get("type") != kind or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f'{param} must be {{"type": "{kind}", "value": N}}', param)
    return value


def _keep(edit: ContextEdit) -> int | None:
    """How many recent tool uses stay; None keeps all."""
    if edit.keep == "all":
        return None
    spec = edit.keep if isinstance(edit.keep, dict) else None
    return _value(spec, "tool_uses", DEFAULT_KEEP_TOOL_USES, "context_management.edits.keep")


def _triggered(edit: ContextEdit, messages: Messages, count_tokens: Callable[[], int]) -> bool:
    param = "context_management.edits.trigger"
    if edit.trigger is not None and edit.trigger.get("type") == "tool_uses":
        uses = len(_tool_results(messages, set()))
        return uses > _value(edit.trigger, "tool_uses", 0, param)
    return count_tokens() > _value(edit.trigger, "input_tokens", DEFAULT_TRIGGER_TOKENS, param)


def _tool_results(messages: Messages, excluded: set[str]) -> list[int]:
    """Indexes of tool-result messages whose tool is not excluded, oldest first."""
    names = {
        call["id"]: call["function"]["name"] for m in messages for call in m.get("tool_calls") or ()
    }
    return [
        i
        for i, m in enumerate(messages)
        if m["role"] == "tool" and names.get(m.get("tool_call_id")) not in excluded
    ]


def _clear_tool_uses(messages: Messages, edit: ContextEdit, keep: int) -> Messages:
    results = _tool_results(messages, set(edit.exclude_tools or ()))
    cleared = results[: max(0, len(results) - keep)]
    ids = {messages[i].get("tool_call_id") for i in cleared}
    out = [dict(m) for m in messages]
    for i in cleared:
        out[i]["content"] = CLEARED
    if edit.clear_tool_inputs:
        for m in out:
            if m.get("tool_calls"):
                m["tool_calls"] = [
                    {**c, "function": {**c["function"], "arguments": {}}} if c["id"] in ids else c
                    for c in m["tool_calls"]
                ]
    return out
