"""``--mcp-config`` end to end: the MCP routes of a real server, driving real MCP servers.

The config names the SDK-built test servers of tests/mcp/servers: ``local`` over stdio
(a child of the server) and ``remote`` over streamable HTTP (started here on a free
loopback port), plus ``broken``, whose URL nobody listens on, and ``ghost``, whose
program does not exist: neither stops the start. Both working servers
offer echo, fail, sleep, pid, crash and add_tool; each call times out after 2 s.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import REPO_ROOT, assert_openai_error, free_port, run_server

pytestmark = pytest.mark.slow

SERVERS_DIR = REPO_ROOT / "tests" / "mcp" / "servers"
TOOLS = ("echo", "fail", "sleep", "pid", "crash", "add_tool")
TIMEOUT_S = 2
MAX_CALLS = 8  # per tool per minute; only remote__pid is called that often
KEY = "mcp-key"


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"MCP test server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"MCP test server not listening on {port} after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def remote_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A streamable-HTTP MCP server on a free loopback port, for the whole module."""
    port = free_port()
    log = tmp_path_factory.mktemp("mcp-http") / "server.log"
    with log.open("wb") as out:
        cmd = [sys.executable, str(SERVERS_DIR / "http_server.py"), "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_config(folder: Path, remote_url: str) -> Path:
    config = {
        "servers": {
            "local": {
                "transport": "stdio",
                "command": sys.executable,
                "args": [str(SERVERS_DIR / "stdio_server.py")],
                "timeout": TIMEOUT_S,
            },
            "remote": {"transport": "streamable-http", "url": remote_url, "timeout": TIMEOUT_S},
            "broken": {
                "transport": "streamable-http",
                "url": f"http://127.0.0.1:{free_port()}/mcp",
            },
            "ghost": {"transport": "stdio", "command": str(SERVERS_DIR / "no_such_server")},
        },
        "max_tool_calls": MAX_CALLS,
    }
    path = folder / "mcp.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, remote_url: str) -> Path:
    return write_config(tmp_path_factory.mktemp("mcp-config"), remote_url)


@pytest.fixture(scope="module")
def http(launch_server: LaunchServer, config_path: Path) -> Iterator[httpx.Client]:
    url = launch_server("--mcp-config", str(config_path)).base_url
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def execute(http: httpx.Client, tool: str, **arguments: Any) -> httpx.Response:
    return http.post("/v1/mcp/execute", json={"tool_name": tool, "arguments": arguments})


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def servers(http: httpx.Client) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in ok(http.get("/v1/mcp/servers"))["data"]}


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {timeout_s:.0f} s")
        time.sleep(0.2)


def text_of(result: dict[str, Any]) -> str:
    return "".join(block.get("text", "") for block in result["content"])


# -- listing --------------------------------------------------------------------------


def test_servers_list_states_and_a_failed_server(http: httpx.Client) -> None:
    states = servers(http)
    assert set(states) == {"local", "remote", "broken", "ghost"}
    assert states["local"]["transport"] == "stdio"
    assert states["remote"]["transport"] == "streamable-http"
    for name in ("local", "remote"):
        assert states[name]["state"] == "connected", states[name]
        assert states[name]["tools"] == len(TOOLS) and states[name]["error"] is None
    for name in ("broken", "ghost"):
        down = states[name]
        assert down["state"] in ("failed", "restarting") and down["tools"] == 0, down
        assert isinstance(down["error"], str) and down["error"] and "\n" not in down["error"]


def test_tools_are_openai_function_tools(http: httpx.Client) -> None:
    body = ok(http.get("/v1/mcp/tools"))
    assert body["object"] == "list"
    tools = {t["function"]["name"]: t for t in body["data"]}
    expected = {f"{server}__{tool}" for server in ("local", "remote") for tool in TOOLS}
    assert expected <= set(tools)
    echo = tools["local__echo"]
    assert echo["type"] == "function" and set(echo) == {"type", "function"}
    assert echo["function"]["description"] == "Return the text unchanged."
    parameters = echo["function"]["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["text"]
    assert parameters["properties"]["text"]["type"] == "string"


def test_tools_in_anthropic_form(http: httpx.Client) -> None:
    data = ok(http.get("/v1/mcp/tools", params={"format": "anthropic"}))["data"]
    echo = next(t for t in data if t["name"] == "remote__echo")
    assert set(echo) == {"name", "description", "input_schema"}
    assert echo["input_schema"]["required"] == ["text"]


def test_health_capabilities_and_status_report_mcp(http: httpx.Client) -> None:
    health = ok(http.get("/health"))
    assert health["status"] == "healthy"
    assert health["mcp"]["servers"] == 4 and health["mcp"]["connected"] == 2
    assert health["mcp"]["tools"] >= 2 * len(TOOLS)
    caps = ok(http.get("/v1/capabilities"))
    assert caps["features"]["mcp"] is True
    assert caps["features"]["mcp_tools"] >= 2 * len(TOOLS)
    assert {"/v1/mcp/servers", "/v1/mcp/tools", "/v1/mcp/execute"} <= set(caps["endpoints"])
    status = {s["name"]: s for s in ok(http.get("/v1/status"))["mcp"]}
    assert status["local"]["state"] == "connected" and status["local"]["transport"] == "stdio"
    assert set(status) == {"local", "remote", "broken", "ghost"}


# -- execute --------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["local", "remote"])
def test_execute_echo_keeps_text_and_structured_content(http: httpx.Client, server: str) -> None:
    result = ok(execute(http, f"{server}__echo", text="hello"))
    assert result["tool_name"] == f"{server}__echo"
    assert result["is_error"] is False and result["error_message"] is None
    assert result["content"] == [{"type": "text", "text": "hello"}]
    assert result["structured_content"] == {"result": "hello"}


def test_arguments_may_be_json_text(http: httpx.Client) -> None:
    body = {"tool_name": "local__echo", "arguments": json.dumps({"text": "as text"})}
    assert text_of(ok(http.post("/v1/mcp/execute", json=body))) == "as text"


@pytest.mark.parametrize("server", ["local", "remote"])
def test_tool_error_is_a_200_with_is_error(http: httpx.Client, server: str) -> None:
    result = ok(execute(http, f"{server}__fail", message="boom"))
    assert result["is_error"] is True
    assert "boom" in text_of(result) or "boom" in (result["error_message"] or "")


@pytest.mark.parametrize("server", ["local", "remote"])
def test_timeout_is_an_error_result_and_the_server_stays_usable(
    http: httpx.Client, server: str
) -> None:
    started = time.monotonic()
    result = ok(execute(http, f"{server}__sleep", seconds=30))
    elapsed = time.monotonic() - started
    assert result["is_error"] is True and result["error_message"], result
    assert "time" in result["error_message"].lower()  # timed out / timeout
    assert TIMEOUT_S - 0.5 <= elapsed < TIMEOUT_S + 5, elapsed
    assert text_of(ok(execute(http, f"{server}__echo", text="after"))) == "after"


@pytest.mark.parametrize(
    "arguments", [{}, {"text": 5}, {"text": None}], ids=["missing", "number", "null"]
)
def test_arguments_that_do_not_fit_the_schema_are_400(
    http: httpx.Client, arguments: dict[str, Any]
) -> None:
    error = assert_openai_error(execute(http, "local__echo", **arguments), 400)
    assert error["code"] == "invalid_arguments" and error["param"] == "arguments"


@pytest.mark.parametrize(
    "body",
    [{"arguments": {}}, {"tool_name": "local__echo", "arguments": 3}, {"tool_name": 1}],
    ids=["no-name", "arguments-not-object", "name-not-string"],
)
def test_malformed_body_is_400(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_openai_error(http.post("/v1/mcp/execute", json=body), 400)


def test_body_that_is_not_json_is_400(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/mcp/execute", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_openai_error(resp, 400)


@pytest.mark.parametrize("name", ["local__nope", "nope__echo", "echo"])
def test_unknown_tool_is_404(http: httpx.Client, name: str) -> None:
    error = assert_openai_error(execute(http, name), 404)
    assert error["code"] == "tool_not_found" and error["param"] == "tool_name"


def test_tool_of_a_failed_server_is_not_served(http: httpx.Client) -> None:
    resp = execute(http, "broken__echo", text="x")
    assert resp.status_code in (404, 503), resp.text
    assert_openai_error(resp, (404, 503))


def test_max_tool_calls_per_minute(http: httpx.Client) -> None:
    for _ in range(MAX_CALLS):
        assert ok(execute(http, "remote__pid"))["is_error"] is False
    resp = execute(http, "remote__pid")
    error = assert_openai_error(resp, 429)
    assert error["type"] == "rate_limit_error" and error["code"] == "tool_call_limit"
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert ok(execute(http, "remote__echo", text="other tools still run"))["is_error"] is False


def test_tool_list_changes_are_picked_up(http: httpx.Client) -> None:
    assert ok(execute(http, "remote__add_tool", name="late"))["is_error"] is False

    def listed() -> bool:
        names = {t["function"]["name"] for t in ok(http.get("/v1/mcp/tools"))["data"]}
        return "remote__late" in names

    wait_for(listed, timeout_s=15)
    assert text_of(ok(execute(http, "remote__late", text="new"))) == "new"


def test_crashed_stdio_server_is_restarted(http: httpx.Client) -> None:
    old_pid = int(text_of(ok(execute(http, "local__pid"))))
    restarts = servers(http)["local"]["restarts"]
    resp = execute(http, "local__crash")
    if resp.status_code == 200:
        assert resp.json()["is_error"] is True
    else:
        assert_openai_error(resp, 503)
    seen: set[str] = set()

    def reconnected() -> bool:
        local = servers(http)["local"]
        seen.add(local["state"])
        return local["state"] == "connected" and local["restarts"] > restarts

    wait_for(reconnected, timeout_s=30)
    assert seen & {"failed", "restarting"}, seen  # it was reported down before coming back
    assert not _alive(old_pid)
    new_pid = int(text_of(ok(execute(http, "local__pid"))))
    assert new_pid != old_pid
    assert text_of(ok(execute(http, "local__echo", text="back"))) == "back"


# -- without --mcp-config ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/mcp/servers"), ("GET", "/v1/mcp/tools"), ("POST", "/v1/mcp/execute")],
)
def test_unconfigured_routes_are_503(tiny_http: httpx.Client, method: str, path: str) -> None:
    body = {"tool_name": "local__echo", "arguments": {}}
    error = assert_openai_error(tiny_http.request(method, path, json=body), 503)
    assert error["code"] == "mcp_not_configured" and "--mcp-config" in error["message"]


def test_unconfigured_server_reports_no_mcp(tiny_http: httpx.Client) -> None:
    assert "mcp" not in tiny_http.get("/health").json()
    caps = tiny_http.get("/v1/capabilities").json()
    assert caps["features"]["mcp"] is False and caps["features"]["mcp_tools"] == 0
    assert not [e for e in caps["endpoints"] if e.startswith("/v1/mcp")]
    assert tiny_http.get("/v1/status").json()["mcp"] is None


# -- auth, and no orphans after shutdown ----------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


ROUTES = [
    ("GET", "/v1/mcp/servers", None),
    ("GET", "/v1/mcp/tools", None),
    ("POST", "/v1/mcp/execute", {"tool_name": "local__echo", "arguments": {"text": "k"}}),
]


def test_auth_then_no_orphans_after_shutdown(
    tiny_llama_path: Path, config_path: Path, tmp_path: Path
) -> None:
    args = ("--mcp-config", str(config_path), "--api-key", KEY)
    with run_server(tiny_llama_path, args, work_dir=tmp_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            for method, path, body in ROUTES:
                for headers in ({}, {"Authorization": "Bearer wrong"}):
                    resp = client.request(method, path, json=body, headers=headers)
                    assert assert_openai_error(resp, 401)["type"] == "authentication_error"
                for headers in ({"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
                    resp = client.request(method, path, json=body, headers=headers)
                    assert resp.status_code == 200, resp.text
            assert client.get("/health").json()["mcp"]["connected"] == 2  # /health stays open
            auth = {"x-api-key": KEY}
            resp = client.post("/v1/mcp/execute", json={"tool_name": "local__pid"}, headers=auth)
            stdio_pid = int(text_of(ok(resp)))
        children = psutil.Process(server.process.pid).children(recursive=True)
        pids = {child.pid for child in children}
        assert stdio_pid in pids
    assert server.process.returncode is not None
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout_s=10)
