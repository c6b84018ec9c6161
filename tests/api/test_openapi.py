"""/openapi.json documents every route's request and response models (no model loaded)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from vllm_mlx.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from vllm_mlx.api.errors import (
    AnthropicErrorBody,
    APIError,
    ErrorType,
    ModelNotFound,
    OpenAIErrorBody,
)
from vllm_mlx.api.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from vllm_mlx.api.openapi import REF_TEMPLATE
from vllm_mlx.config import ServerConfig
from vllm_mlx.server.app import create_app

REQUESTS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
    "/v1/messages": MessagesRequest,
    "/v1/messages/count_tokens": CountTokensRequest,
}
RESPONSES = {
    "/health": "Health",
    "/v1/models": "ModelList",
    "/v1/capabilities": "Capabilities",
    "/v1/status": "ServerStatus",
    "/v1/chat/completions": "ChatCompletion",
    "/v1/completions": "Completion",
    "/v1/embeddings": "EmbeddingList",
    "/v1/messages": "MessageResponse",
    "/v1/messages/count_tokens": "CountTokensResponse",
}
STREAMS = {
    "/v1/chat/completions": "ChatCompletionChunk",
    "/v1/completions": "CompletionChunk",
    "/v1/messages": "StreamEvent",
}


def _document() -> dict[str, Any]:
    app = create_app(ServerConfig(), load=lambda: pytest.fail("the model must not load"))
    return app.openapi()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return _document()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for operation in methods.values():
            yield path, operation


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _schema(media: dict[str, Any], kind: str) -> dict[str, Any]:
    return media["content"][kind]["schema"]


def test_every_route_is_documented(document: dict[str, Any]) -> None:
    assert set(RESPONSES) <= set(document["paths"])


@pytest.mark.parametrize("path", sorted(REQUESTS))
def test_request_bodies_are_the_models(document: dict[str, Any], path: str) -> None:
    model = REQUESTS[path]
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    assert _schema(body, "application/json") == _ref(model.__name__)
    expected = _without_nulls(model.model_json_schema(ref_template=REF_TEMPLATE))
    expected.pop("$defs", None)
    assert document["components"]["schemas"][model.__name__] == expected


def _without_nulls(node: Any) -> Any:
    """FastAPI writes the document without null values (``"default": null`` goes)."""
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


@pytest.mark.parametrize("path", sorted(RESPONSES))
def test_responses_name_their_models(document: dict[str, Any], path: str) -> None:
    (operation,) = document["paths"][path].values()
    ok = operation["responses"]["200"]
    assert _schema(ok, "application/json") == _ref(RESPONSES[path])
    if path in STREAMS:
        event = _schema(ok, "text/event-stream")
        done, data = event["properties"]["data"]["anyOf"]
        assert done == {"const": "[DONE]"}
        assert data["contentMediaType"] == "application/json"
        assert _ref(STREAMS[path]) in data["contentSchema"]["anyOf"]
    if path == "/health":
        assert _schema(operation["responses"]["503"], "application/json") == _ref("Health")
        return
    error = "AnthropicErrorBody" if path.startswith("/v1/messages") else "OpenAIErrorBody"
    for status in ("4XX", "5XX"):
        assert _schema(operation["responses"][status], "application/json") == _ref(error)
    assert "422" not in operation["responses"]  # bad bodies are our 400s, not FastAPI's


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    assert '"$defs"' not in text
    prefix = REF_TEMPLATE.format(model="")
    names = {ref.removeprefix(prefix) for ref in _refs(document)}
    assert names <= set(document["components"]["schemas"])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_document_is_the_same_for_every_app(document: dict[str, Any]) -> None:
    # Hoisting must not strip the definitions from the (shared) routes.
    assert _document() == document


def _documented(document: dict[str, Any], model: str, body: Any) -> bool:
    schema = {"$ref": REF_TEMPLATE.format(model=model), "components": document["components"]}
    return Draft202012Validator(schema).is_valid(body)


def _accepted(model: type[BaseModel], body: Any) -> bool:
    try:
        model.model_validate_json(json.dumps(body))
    except ValidationError:
        return False
    return True


CALL = {"function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "hi"},
        {"role": "user"},
        {"role": "tool", "content": None},
        {"role": "assistant"},
        {"role": "assistant", "tool_calls": []},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "system", "tool_calls": [CALL]},
        {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
    ],
)
def test_message_schema_says_what_the_validator_checks(
    document: dict[str, Any], message: dict[str, Any]
) -> None:
    body = {"messages": [message]}
    expected = _accepted(ChatCompletionRequest, body)
    assert _documented(document, "ChatCompletionRequest", body) is expected


@pytest.mark.parametrize(
    ("prompt", "accepted"),
    [
        ("hi", True),
        (["a", "b"], True),
        ([1, 2], True),
        ([[1], [2, 3]], True),
        ("", False),
        ([], False),
        (["a", ""], False),
        ([[1], []], False),
        ([1, -1], False),
    ],
)
def test_prompt_schema_says_what_the_adapter_refuses(
    document: dict[str, Any], prompt: Any, accepted: bool
) -> None:
    # Empty prompts and negative ids pass the model and are refused by completion_prompts.
    assert _documented(document, "CompletionRequest", {"prompt": prompt}) is accepted


@pytest.mark.parametrize("kind", list(ErrorType))
def test_error_bodies_match_their_models(kind: ErrorType) -> None:
    error = APIError("went wrong", kind, param="p")
    assert OpenAIErrorBody.model_validate(error.openai_body()).error.type is kind
    assert AnthropicErrorBody.model_validate(error.anthropic_body()).type == "error"
    body = ModelNotFound("x", ["default"]).openai_body()
    assert OpenAIErrorBody.model_validate(body).error.code == "model_not_found"
