"""Domain errors and their one mapping to protocol error bodies."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from vllm_mlx.engine.types import EngineError, ErrorKind

log = logging.getLogger(__name__)


class ErrorType(StrEnum):
    """OpenAI error ``type`` values, each tied to one HTTP status."""

    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    NOT_FOUND = "not_found_error"
    TIMEOUT = "timeout_error"
    RATE_LIMIT = "rate_limit_error"
    OVERLOADED = "overloaded_error"
    SERVER = "server_error"


_STATUS = {
    ErrorType.INVALID_REQUEST: 400,
    ErrorType.AUTHENTICATION: 401,
    ErrorType.NOT_FOUND: 404,
    ErrorType.TIMEOUT: 408,
    ErrorType.RATE_LIMIT: 429,
    ErrorType.OVERLOADED: 503,
    ErrorType.SERVER: 500,
}

# Anthropic names the same situations differently.
_ANTHROPIC_TYPE = {
    ErrorType.INVALID_REQUEST: "invalid_request_error",
    ErrorType.AUTHENTICATION: "authentication_error",
    ErrorType.NOT_FOUND: "not_found_error",
    ErrorType.TIMEOUT: "timeout_error",
    ErrorType.RATE_LIMIT: "rate_limit_error",
    ErrorType.OVERLOADED: "overloaded_error",
    ErrorType.SERVER: "api_error",
}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: ErrorType
    param: str | None  # the offending request field, when one is to blame
    code: str | None  # e.g. model_not_found, context_length_exceeded


class OpenAIErrorBody(BaseModel):
    """Every error answer of the OpenAI routes (and of the rest but /v1/messages)."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str  # invalid_request_error, authentication_error, ..., api_error
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error answer of /v1/messages and /v1/messages/count_tokens."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


class APIError(Exception):
    """Any error the API reports to a client."""

    def __init__(
        self,
        message: str,
        type: ErrorType = ErrorType.INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.status = status if status is not None else _STATUS[type]
        self.retry_after_s = retry_after_s  # sent as Retry-After (429, 503)

    def openai_body(self) -> dict[str, Any]:
        detail = OpenAIErrorDetail(
            message=self.message, type=self.type, param=self.param, code=self.code
        )
        return OpenAIErrorBody(error=detail).model_dump(mode="json")

    def anthropic_body(self) -> dict[str, Any]:
        detail = AnthropicErrorDetail(type=_ANTHROPIC_TYPE[self.type], message=self.message)
        return AnthropicErrorBody(error=detail).model_dump(mode="json")


class InvalidRequest(APIError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, ErrorType.INVALID_REQUEST, param, code)


class ModelNotFound(APIError):
    def __init__(self, model: str, available: list[str]) -> None:
        super().__init__(
            f"The model '{model}' does not exist. Available: {', '.join(available)}.",
            ErrorType.NOT_FOUND,
            "model",
            "model_not_found",
        )


class RequestTimedOut(APIError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"Request timed out after {timeout_s:g} s (server --timeout).",
            ErrorType.TIMEOUT,
            code="request_timeout",
        )


def from_engine_error(error: EngineError) -> APIError:
    kind = {
        ErrorKind.INVALID_REQUEST: ErrorType.INVALID_REQUEST,
        ErrorKind.OVERLOADED: ErrorType.OVERLOADED,
        ErrorKind.INTERNAL: ErrorType.SERVER,
    }[error.kind]
    return APIError(error.message, kind)


def _is_anthropic(request: Request) -> bool:
    return request.url.path.startswith("/v1/messages")


def error_response(
    request: Request, error: APIError, cause: BaseException | None = None
) -> JSONResponse:
    """The protocol's error body; the refusal is logged once, with what the client is told
    (never the request body or a key): INFO for a 4xx, ERROR for a 5xx (with the
    traceback of an unexpected ``cause``)."""
    request_id = getattr(request.state, "request_id", "-")
    log.log(
        logging.ERROR if error.status >= 500 else logging.INFO,
        "request %s: %s %s -> %d %s: %s",
        request_id, request.method, request.url.path, error.status, error.type.value,
        error.message, exc_info=cause,
    )  # fmt: skip
    body = error.anthropic_body() if _is_anthropic(request) else error.openai_body()
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
    return JSONResponse(body, status_code=error.status, headers=headers)


def _is_field(loc: object) -> bool:
    """Pydantic puts union branch tags such as 'str' or 'list[int]' into locations."""
    if isinstance(loc, int):
        return True
    text = str(loc)
    return text != "body" and text not in _TYPE_TAGS and "[" not in text


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "function-after"}


def from_validation_error(errors: list[Any]) -> InvalidRequest:
    """Pydantic's first complaint, worded for a client, naming the parameter."""
    if not errors:
        return InvalidRequest("invalid request")
    first = errors[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if _is_field(p)) or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        return InvalidRequest(f"Request body is not valid JSON: {msg}")
    return InvalidRequest(f"{param}: {msg}" if param else msg, param)


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through one body shape per protocol."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, from_validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = ErrorType.NOT_FOUND if exc.status_code == 404 else ErrorType.INVALID_REQUEST
        return error_response(request, APIError(str(exc.detail), kind, status=exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, APIError("internal server error", ErrorType.SERVER), exc)
