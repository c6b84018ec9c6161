"""``--api-key``: Bearer for every API route, x-api-key too, and each protocol's 401 body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error

KEY = "k"
USER = [{"role": "user", "content": "Hi"}]
CHAT_BODY = {"model": "default", "messages": USER, "max_tokens": 2, "temperature": 0}
MESSAGES_BODY = {"model": "default", "messages": USER, "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def url(launch_server: LaunchServer) -> str:
    return launch_server("--api-key", KEY).base_url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_anthropic_401(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]


def test_health_is_open(http: httpx.Client) -> None:
    resp = http.get("/health")
    assert resp.status_code == 200 and resp.json()["status"] == "healthy"


OPENAI_ROUTES = [
    ("POST", "/v1/chat/completions", CHAT_BODY),
    ("POST", "/v1/completions", {"model": "default", "prompt": "Hi", "max_tokens": 2}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/capabilities", None),
    ("GET", "/v1/status", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OPENAI_ROUTES)
@pytest.mark.parametrize(
    "headers", [{}, bearer("wrong"), {"Authorization": KEY}, {"Authorization": "Basic k"}]
)
def test_openai_routes_refuse_without_the_key(
    http: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    resp = http.request(method, path, json=body, headers=headers)
    error = assert_openai_error(resp, 401)
    assert error["type"] == "authentication_error"


@pytest.mark.parametrize(("method", "path", "body"), OPENAI_ROUTES)
def test_openai_routes_accept_bearer(http: httpx.Client, method: str, path: str, body: Any) -> None:
    assert http.request(method, path, json=body, headers=bearer()).status_code == 200


def test_bearer_scheme_is_case_insensitive(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/chat/completions", json=CHAT_BODY, headers={"Authorization": f"bearer {KEY}"}
    )
    assert resp.status_code == 200


def test_openai_sdk(url: str) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as client:
        response = client.chat.completions.create(**CHAT_BODY)
        assert response.usage.completion_tokens == 2
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(**CHAT_BODY)


def anthropic_client(url: str, **auth: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, max_retries=0, timeout=60, **auth)


def create(client: anthropic.Anthropic) -> Any:
    return client.messages.create(
        model="default", messages=USER, max_tokens=2, extra_body={"temperature": 0}
    )


@pytest.mark.parametrize("auth", [{"api_key": KEY}, {"auth_token": KEY, "api_key": None}])
def test_anthropic_sdk_with_x_api_key_or_bearer(url: str, auth: dict[str, Any]) -> None:
    with anthropic_client(url, **auth) as client:
        message = create(client)
        assert message.usage.output_tokens == 2
        assert client.messages.count_tokens(model="default", messages=USER).input_tokens > 0
        with client.messages.stream(model="default", messages=USER, max_tokens=2) as stream:
            assert stream.get_final_message().usage.output_tokens == 2


@pytest.mark.parametrize("auth", [{"api_key": "wrong"}, {"auth_token": "wrong", "api_key": None}])
def test_anthropic_sdk_wrong_key(url: str, auth: dict[str, Any]) -> None:
    with (
        anthropic_client(url, **auth) as client,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        create(client)
    assert info.value.status_code == 401
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(
    "headers", [{}, {"x-api-key": "wrong"}, bearer("wrong"), {"x-api-key": ""}]
)
def test_messages_refuse_with_anthropic_bodies(
    http: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    assert_anthropic_401(http.post(path, json=MESSAGES_BODY, headers=headers))


@pytest.mark.parametrize("headers", [{"x-api-key": KEY}, bearer()])
def test_messages_accept_raw_headers(http: httpx.Client, headers: dict[str, str]) -> None:
    resp = http.post("/v1/messages", json={**MESSAGES_BODY, "stream": True}, headers=headers)
    assert resp.status_code == 200
    assert "event: message_stop" in resp.text


def test_401_keeps_the_request_id(http: httpx.Client) -> None:
    for path, body in (("/v1/chat/completions", CHAT_BODY), ("/v1/messages", MESSAGES_BODY)):
        fresh = http.post(path, json=body)
        assert fresh.status_code == 401 and fresh.headers.get("x-request-id")
        mine = http.post(path, json=body, headers={"x-request-id": "auth-rid-9"})
        assert mine.status_code == 401 and mine.headers["x-request-id"] == "auth-rid-9"
    assert http.get("/health").headers.get("x-request-id")


def test_capabilities_report_auth(http: httpx.Client) -> None:
    caps = http.get("/v1/capabilities", headers=bearer()).json()
    assert caps["auth"]["enabled"] is True
    assert set(caps["auth"]["schemes"]) == {"bearer", "x-api-key"}
    assert KEY not in caps["auth"].values()  # the key itself is never shown
