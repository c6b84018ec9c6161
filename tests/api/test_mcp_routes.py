"""The MCP routes on a fake ToolService: bodies, and each MCPError's status (no model)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fixtures.server import assert_openai_error
from vllm_mlx.api.errors import install_error_handlers
from vllm_mlx.config import ServerConfig
from vllm_mlx.mcp import routes
from vllm_mlx.mcp.types import (
    CallLimited,
    InvalidArguments,
    MCPConfig,
    ServerState,
    ServerUnavailable,
    ToolInfo,
    ToolResult,
    Transport,
    UnknownTool,
)
from vllm_mlx.server.app import create_app

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
ECHO = ToolInfo("files", "echo", "files__echo", "Return the text", SCHEMA)


class FakeService:
    """Answers as a manager would; ``refusal`` is raised by the next call."""

    def __init__(self) -> None:
        self.refusal: Exception | None = None
        self.calls: list[tuple[str, Mapping[str, Any]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def servers(self) -> list[ServerState]:
        return [
            ServerState("files", Transport.STDIO, "connected", 1),
            ServerState("web", Transport.STREAMABLE_HTTP, "failed", 0, "connection refused", 2),
        ]

    def tools(self) -> list[ToolInfo]:
        return [ECHO]

    async def call(self, qualified_name: str, arguments: Mapping[str, Any]) -> ToolResult:
        self.calls.append((qualified_name, arguments))
        if self.refusal is not None:
            raise self.refusal
        text = {"type": "text", "text": str(arguments.get("text"))}
        return ToolResult(qualified_name, (text,), {"result": arguments.get("text")}, False)


def app_with(service: FakeService | None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(routes.router)
    app.state.mcp = service
    return app


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def client(service: FakeService) -> Iterator[TestClient]:
    with TestClient(app_with(service)) as http:
        yield http


def test_servers(client: TestClient) -> None:
    body = client.get("/v1/mcp/servers").json()
    assert body["object"] == "list"
    assert body["data"] == [
        {"name": "files", "transport": "stdio", "state": "connected", "tools": 1,
         "error": None, "restarts": 0},
        {"name": "web", "transport": "streamable-http", "state": "failed", "tools": 0,
         "error": "connection refused", "restarts": 2},
    ]  # fmt: skip


def test_tools_as_openai_and_anthropic(client: TestClient) -> None:
    (tool,) = client.get("/v1/mcp/tools").json()["data"]
    assert tool == {
        "type": "function",
        "function": {"name": "files__echo", "description": "Return the text", "parameters": SCHEMA},
    }
    (tool,) = client.get("/v1/mcp/tools", params={"format": "anthropic"}).json()["data"]
    assert tool == {"name": "files__echo", "description": "Return the text", "input_schema": SCHEMA}
    assert_openai_error(client.get("/v1/mcp/tools", params={"format": "x"}), 400)


@pytest.mark.parametrize("arguments", [{"text": "hi"}, '{"text": "hi"}'])
def test_execute(client: TestClient, service: FakeService, arguments: Any) -> None:
    resp = client.post("/v1/mcp/execute", json={"tool_name": "files__echo", "arguments": arguments})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "tool_name": "files__echo",
        "content": [{"type": "text", "text": "hi"}],
        "structured_content": {"result": "hi"},
        "is_error": False,
        "error_message": None,
    }
    assert service.calls == [("files__echo", {"text": "hi"})]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tool_name": ""},
        {"tool_name": "files__echo", "arguments": [1]},
        {"tool_name": "files__echo", "arguments": "not json"},
        {"tool_name": "files__echo", "arguments": "[1]"},
        {"tool_name": "files__echo", "extra": 1},
    ],
)
def test_malformed_bodies_are_400(client: TestClient, service: FakeService, body: Any) -> None:
    assert_openai_error(client.post("/v1/mcp/execute", json=body), 400)
    assert service.calls == []


def test_body_that_is_not_json_is_400(client: TestClient) -> None:
    resp = client.post(
        "/v1/mcp/execute", content=b"{", headers={"content-type": "application/json"}
    )
    assert_openai_error(resp, 400)


@pytest.mark.parametrize(
    ("refusal", "status", "kind", "code"),
    [
        (UnknownTool("no tool 'x__y'"), 404, "not_found_error", "tool_not_found"),
        (InvalidArguments("text: required"), 400, "invalid_request_error", "invalid_arguments"),
        (CallLimited("2 calls per minute", 12.2), 429, "rate_limit_error", "tool_call_limit"),
        (
            ServerUnavailable("files is restarting"),
            503,
            "overloaded_error",
            "mcp_server_unavailable",
        ),
    ],
)
def test_refusals(
    client: TestClient, service: FakeService, refusal: Exception, status: int, kind: str, code: str
) -> None:
    service.refusal = refusal
    resp = client.post("/v1/mcp/execute", json={"tool_name": "files__echo", "arguments": {}})
    error = assert_openai_error(resp, status)
    assert (error["type"], error["code"], error["message"]) == (kind, code, str(refusal))
    if status == 429:
        assert resp.headers["retry-after"] == "13"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/mcp/servers"), ("GET", "/v1/mcp/tools"), ("POST", "/v1/mcp/execute")],
)
def test_not_configured_is_503(method: str, path: str) -> None:
    with TestClient(app_with(None)) as http:
        resp = http.request(method, path, json={"tool_name": "a__b"})
    error = assert_openai_error(resp, 503)
    assert error["code"] == "mcp_not_configured"
    assert "--mcp-config" in error["message"]


def test_report(service: FakeService) -> None:
    report = routes.MCPReport(service)
    assert report.summary() == {"servers": 2, "connected": 1, "tools": 1}
    assert report.tool_count() == 1 and report.endpoints == routes.ENDPOINTS
    assert [s["name"] for s in report.servers()] == [s.name for s in service.servers()]


def test_openapi_documents_the_routes_only_when_configured() -> None:
    def paths(config: ServerConfig) -> dict[str, Any]:
        app = create_app(config, load=lambda: pytest.fail("the model must not load"))
        document: dict[str, Any] = app.openapi()
        return {p: v for p, v in document["paths"].items() if p.startswith("/v1/mcp/")}

    assert paths(ServerConfig()) == {}
    documented = paths(ServerConfig(mcp=MCPConfig(servers=())))
    assert set(documented) == set(routes.ENDPOINTS)
    ok = documented["/v1/mcp/execute"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MCPToolResult"
    }
    body = documented["/v1/mcp/execute"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ExecuteRequest"}
