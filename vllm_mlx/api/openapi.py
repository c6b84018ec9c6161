"""/openapi.json for routes that parse their own bodies.

Routes read bodies with ``parse_body`` (a bad body is a protocol-shaped 400, not
FastAPI's 422), so FastAPI never sees their request models. ``json_body`` and
``response_docs`` name the models at the route; the definitions they carry
(``$defs``) move into ``components/schemas`` when ``install_openapi`` builds the
document, beside the response models FastAPI puts there itself.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"


Mode = Literal["validation", "serialization"]


def _refs(models: list[type[BaseModel]], mode: Mode) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A ``$ref`` per model, and the definitions they need (``$defs``)."""
    refs, schema = models_json_schema([(m, mode) for m in models], ref_template=REF_TEMPLATE)
    return [refs[(m, mode)] for m in models], schema["$defs"]


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body ``parse_body`` reads as ``model``."""
    (ref,), definitions = _refs([model], "validation")
    content = {"application/json": {"schema": {**ref, "$defs": definitions}}}
    return {"requestBody": {"required": True, "content": content}}


def event_schema(event: type[BaseModel], error: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event: ``data`` is an ``event`` or ``error`` as JSON, or ``[DONE]``.

    Events are described as OpenAPI 3.2 does (an object of the event's fields, with
    the data decoded by ``contentSchema``), which schemathesis checks event by event.
    """
    refs, definitions = _refs([event, error], "serialization")
    json_data = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"anyOf": refs},
    }
    return {
        "type": "object",
        "properties": {
            "event": {"type": "string"},
            "data": {"anyOf": [{"const": "[DONE]"}, json_data]},
        },
        "required": ["data"],
        "$defs": definitions,
    }


def response_docs(
    ok: type[BaseModel], error: type[BaseModel], stream: type[BaseModel] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses`` for a route: its 200 body (and stream events), and its error body."""
    success: dict[str, Any] = {"model": ok}
    if stream is not None:
        success["content"] = {"text/event-stream": {"schema": event_schema(stream, error)}}
        success["description"] = (
            f"{ok.__name__}; with `stream: true`, server-sent events whose data is a "
            f"{stream.__name__}"
        )
    return {
        200: success,
        "4XX": {"model": error, "description": "The request was refused"},
        "5XX": {"model": error, "description": "Overloaded, still loading, or failed"},
    }


def install_openapi(app: FastAPI) -> None:
    """Serve the document with every route's hoisted definitions in ``components``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # FastAPI's document, copied: it shares dicts with the routes, which other apps reuse.
            document = copy.deepcopy(FastAPI.openapi(app))
            _hoist_definitions(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _hoist_definitions(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for operation in (op for path in document["paths"].values() for op in path.values()):
        bodies = [operation.get("requestBody", {}), *operation.get("responses", {}).values()]
        for media in (m for body in bodies for m in body.get("content", {}).values()):
            for name, definition in media.get("schema", {}).pop("$defs", {}).items():
                if components.setdefault(name, definition) != definition:
                    raise ValueError(f"two different schemas are named {name!r}")
