"""Error bodies per protocol, the status table and validation-error wording."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from vllm_mlx.api.errors import (
    APIError,
    ErrorType,
    InvalidRequest,
    ModelNotFound,
    RequestTimedOut,
    error_response,
    from_engine_error,
    from_validation_error,
    install_error_handlers,
)
from vllm_mlx.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from vllm_mlx.engine.types import EngineError, ErrorKind


@pytest.mark.parametrize(
    ("kind", "status", "anthropic"),
    [
        (ErrorType.INVALID_REQUEST, 400, "invalid_request_error"),
        (ErrorType.AUTHENTICATION, 401, "authentication_error"),
        (ErrorType.NOT_FOUND, 404, "not_found_error"),
        (ErrorType.TIMEOUT, 408, "timeout_error"),
        (ErrorType.RATE_LIMIT, 429, "rate_limit_error"),
        (ErrorType.OVERLOADED, 503, "overloaded_error"),
        (ErrorType.SERVER, 500, "api_error"),
    ],
)
def test_status_and_bodies_per_type(kind: ErrorType, status: int, anthropic: str) -> None:
    err = APIError("went wrong", kind, param="p", code="c")
    assert err.status == status
    assert str(err) == "went wrong"
    assert err.openai_body() == {
        "error": {"message": "went wrong", "type": kind.value, "param": "p", "code": "c"}
    }
    assert err.anthropic_body() == {
        "type": "error",
        "error": {"type": anthropic, "message": "went wrong"},
    }


def test_openai_body_keeps_null_fields() -> None:
    body = APIError("bad").openai_body()
    assert body == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }
    assert json.loads(json.dumps(body))["error"]["param"] is None


def test_status_override() -> None:
    assert APIError("unsupported media", status=415).status == 415


def test_domain_errors() -> None:
    invalid = InvalidRequest("nope", "temperature", "bad_value")
    assert (invalid.status, invalid.type, invalid.param, invalid.code) == (
        400,
        ErrorType.INVALID_REQUEST,
        "temperature",
        "bad_value",
    )
    missing = ModelNotFound("gpt-x", ["tiny", "default"])
    assert missing.status == 404
    assert missing.message == "The model 'gpt-x' does not exist. Available: tiny, default."
    assert (missing.param, missing.code) == ("model", "model_not_found")
    timeout = RequestTimedOut(1.5)
    assert timeout.status == 408
    assert timeout.code == "request_timeout"
    assert "1.5 s" in timeout.message


@pytest.mark.parametrize(
    ("kind", "status"),
    [(ErrorKind.INVALID_REQUEST, 400), (ErrorKind.OVERLOADED, 503), (ErrorKind.INTERNAL, 500)],
)
def test_from_engine_error(kind: ErrorKind, status: int) -> None:
    err = from_engine_error(EngineError(kind, "engine says no"))
    assert err.status == status
    assert err.message == "engine says no"


# -- from_validation_error ----------------------------------------------------------


def _pydantic_errors(model: type[BaseModel], raw: str) -> list[Any]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(raw)
    return list(info.value.errors())


def _chat_error(**fields: Any) -> InvalidRequest:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return from_validation_error(_pydantic_errors(ChatCompletionRequest, json.dumps(fields)))


def test_field_error_names_the_param() -> None:
    err = _chat_error(temperature="hot")
    assert err.param == "temperature"
    assert err.message == "temperature: Input should be a valid number"
    assert err.status == 400


def test_nested_field_path() -> None:
    err = _chat_error(
        messages=[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]
    )
    assert err.param == "messages.1.role"
    assert err.message.startswith("messages.1.role: Input should be")


def test_range_error_wording() -> None:
    err = _chat_error(max_tokens=0)
    assert err.param == "max_tokens"
    assert err.message == "max_tokens: Input should be greater than or equal to 1"


def test_validator_message_names_param_without_value_error_prefix() -> None:
    err = _chat_error(stop=["1", "2", "3", "4", "5"])
    assert err.param == "stop"
    assert err.message == "stop: at most 4 stop sequences are allowed"
    assert "Value error" not in err.message


def test_message_validator_names_the_message() -> None:
    err = _chat_error(messages=[{"role": "tool"}])
    assert err.param == "messages.0"
    assert err.message == "messages.0: a 'tool' message needs content"


def test_invalid_json() -> None:
    err = from_validation_error(_pydantic_errors(ChatCompletionRequest, '{"messages": ['))
    assert err.message.startswith("Request body is not valid JSON: ")
    assert err.param is None


def test_fastapi_body_prefix_is_dropped() -> None:
    errors = [{"loc": ("body", "n"), "msg": "Input should be a valid integer", "type": "int_type"}]
    err = from_validation_error(errors)
    assert (err.param, err.message) == ("n", "n: Input should be a valid integer")


def test_no_errors() -> None:
    err = from_validation_error([])
    assert err.message == "invalid request"
    assert err.param is None


@pytest.mark.parametrize(
    ("model", "raw", "param"),
    [
        (CompletionRequest, '{"prompt": 5}', "prompt"),
        (
            ChatCompletionRequest,
            '{"messages": [{"role": "user", "content": 7}]}',
            "messages.0.content",
        ),
    ],
)
def test_union_branch_names_stay_out_of_param(model: type[BaseModel], raw: str, param: str) -> None:
    assert from_validation_error(_pydantic_errors(model, raw)).param == param


# -- responses ------------------------------------------------------------------------


def _request(path: str) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [],
        "query_string": b"",
        "server": ("testserver", 80),
        "scheme": "http",
        "root_path": "",
    }
    return Request(scope)


def test_error_response_shape_follows_the_path() -> None:
    err = ModelNotFound("x", ["tiny"])
    openai = error_response(_request("/v1/chat/completions"), err)
    assert openai.status_code == 404
    assert json.loads(openai.body)["error"]["code"] == "model_not_found"
    anthropic = error_response(_request("/v1/messages"), err)
    assert anthropic.status_code == 404
    assert json.loads(anthropic.body) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": err.message},
    }


class _Body(BaseModel):
    n: int


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/chat/completions")
    async def fail_openai() -> None:
        raise InvalidRequest("bad temperature", "temperature")

    @app.post("/v1/messages")
    async def fail_anthropic() -> None:
        raise APIError("busy", ErrorType.OVERLOADED)

    @app.post("/v1/validate")
    async def validate(body: _Body) -> dict[str, int]:
        return {"n": body.n}

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    return TestClient(app, raise_server_exceptions=False)


def test_handler_openai_error(client: TestClient) -> None:
    r = client.post("/v1/chat/completions")
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "bad temperature",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": None,
    }


def test_handler_anthropic_error(client: TestClient) -> None:
    r = client.post("/v1/messages")
    assert r.status_code == 503
    assert r.json() == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


def test_handler_validation_error_is_400(client: TestClient) -> None:
    r = client.post("/v1/validate", json={"n": "x"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "n"


def test_handler_unknown_route_is_404(client: TestClient) -> None:
    r = client.get("/v1/nowhere")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


def test_handler_wrong_method_keeps_its_status(client: TestClient) -> None:
    r = client.get("/v1/messages")
    assert r.status_code == 405
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Method Not Allowed"},
    }


def test_handler_unexpected_error_hides_details(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    r = client.get("/v1/boom")
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "internal server error"
    assert "secret" not in r.text
    logged = [r for r in caplog.records if "GET /v1/boom -> 500" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelname == "ERROR" and logged[0].exc_info
