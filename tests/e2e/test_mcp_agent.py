"""An agent loop over MCP with the official SDKs: list tools, force a call, run it, answer.

The tiny random model cannot choose a tool by itself; naming one in ``tool_choice``
makes constrained decoding write a call whose arguments fit the tool's schema. The
call runs through ``/v1/mcp/execute`` on the SDK-built stdio test server, and its
result goes back as a ``tool`` message (OpenAI) or a ``tool_result`` block (Anthropic).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import REPO_ROOT, openai_client

STDIO_SERVER = REPO_ROOT / "tests" / "mcp" / "servers" / "stdio_server.py"
ECHO = "local__echo"
ASK = "Echo the word hello back to me."
GREEDY = {"temperature": 0.0}  # this anthropic SDK has no temperature argument any more


@pytest.fixture(scope="module")
def url(launch_server: LaunchServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    config = {"mcpServers": {"local": {"command": sys.executable, "args": [str(STDIO_SERVER)]}}}
    path: Path = tmp_path_factory.mktemp("mcp-agent") / "mcp.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return launch_server("--mcp-config", str(path)).base_url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def execute(http: httpx.Client, name: str, arguments: Any) -> str:
    resp = http.post("/v1/mcp/execute", json={"tool_name": name, "arguments": arguments})
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["is_error"] is False, result
    return "".join(block["text"] for block in result["content"] if block["type"] == "text")


def test_openai_agent_loop(url: str, http: httpx.Client) -> None:
    tools = http.get("/v1/mcp/tools").json()["data"]
    schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == ECHO)
    messages: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    with openai_client(url) as client:
        first = client.chat.completions.create(
            model="default",
            messages=messages,
            tools=tools,
            tool_choice={"type": "function", "function": {"name": ECHO}},
            temperature=0.0,
            max_tokens=192,
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        (call,) = choice.message.tool_calls
        assert call.function.name == ECHO
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, schema)
        # The SDK's arguments text goes to the route as is.
        output = execute(http, call.function.name, call.function.arguments)
        assert output == arguments["text"]
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": ECHO, "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": output},
        ]
        final = client.chat.completions.create(
            model="default", messages=messages, tools=tools, temperature=0.0, max_tokens=8
        )
    answer = final.choices[0]
    assert answer.finish_reason in ("stop", "length")
    assert not answer.message.tool_calls and answer.message.content
    assert final.usage.prompt_tokens > first.usage.prompt_tokens


def test_anthropic_agent_loop(url: str, http: httpx.Client) -> None:
    tools = http.get("/v1/mcp/tools", params={"format": "anthropic"}).json()["data"]
    schema = next(t["input_schema"] for t in tools if t["name"] == ECHO)
    messages: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    with anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=120) as client:
        first = client.messages.create(
            model="default",
            messages=messages,
            tools=tools,
            tool_choice={"type": "tool", "name": ECHO},
            max_tokens=192,
            extra_body=GREEDY,
        )
        assert first.stop_reason == "tool_use", first
        (call,) = [block for block in first.content if block.type == "tool_use"]
        assert call.name == ECHO and call.id
        jsonschema.validate(call.input, schema)
        output = execute(http, call.name, call.input)
        assert isinstance(call.input, dict) and output == call.input["text"]
        result = {"type": "tool_result", "tool_use_id": call.id, "content": output}
        messages += [
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ]
        final = client.messages.create(
            model="default",
            messages=messages,
            tools=tools,
            max_tokens=8,
            extra_body=GREEDY,
        )
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.content and final.content[0].type == "text" and final.content[0].text
    assert prompt_tokens(final.usage) > prompt_tokens(first.usage)


def prompt_tokens(usage: Any) -> int:
    return int(usage.input_tokens + (usage.cache_read_input_tokens or 0))
