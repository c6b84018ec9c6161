"""Tools for chat templates that know nothing of tools (Hermes-style fallback).

Such templates drop ``tools`` and ``tool_calls``; without this the model would
never see the tools offered, nor its own earlier calls. The wire format is the
one the ``hermes`` parser reads back::

    <tools>[{"type": "function", "function": {...}}]</tools>     (system message)
    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>
    <tool_response>{...}</tool_response>                          (tool results)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vllm_mlx.backend.tokenizer import Tokenizer

_INSTRUCTIONS = (
    "You may call one or more functions to assist with the user query. "
    "The functions are listed within <tools></tools>:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, reply with a JSON object with its name and arguments within "
    '<tool_call></tool_call> tags:\n<tool_call>\n{{"name": <function-name>, '
    '"arguments": <args-json-object>}}\n</tool_call>'
)


def inline_tools(
    messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages with tool definitions, calls and results written out as text."""
    out = [_inline_message(m) for m in messages]
    if tools:
        block = _INSTRUCTIONS.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _inline_message(message: dict[str, Any]) -> dict[str, Any]:
    if message["role"] == "tool":
        return {
            "role": "user",
            "content": f"<tool_response>\n{message['content']}\n</tool_response>",
        }
    calls = message.get("tool_calls")
    if message["role"] != "assistant" or not calls:
        return message
    rendered = [
        "<tool_call>\n"
        + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
        + "\n</tool_call>"
        for c in calls
    ]
    text = "\n".join([message.get("content") or "", *rendered]).strip()
    return {"role": "assistant", "content": text}


def render_with_tools(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    **template_kwargs: Any,
) -> str:
    """The chat template's rendering, with tools inlined where the template ignores them."""
    if not tokenizer.template_knows_tools and (tools or _has_tool_turns(messages)):
        messages, tools = inline_tools(messages, tools), None
    return tokenizer.render_chat(messages, tools=tools, **template_kwargs)


def _has_tool_turns(messages: Sequence[dict[str, Any]]) -> bool:
    return any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
