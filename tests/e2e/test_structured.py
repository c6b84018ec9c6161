"""Structured output: ``response_format`` json_object and json_schema, enforced per token.

Constrained requests share batches with unconstrained ones on a batched server;
the grammar mask of one request must never leak into its neighbours, so the
unconstrained requests give exactly their serial (greedy) outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error, openai_client, wait_idle

CHAT = "/v1/chat/completions"
ITEM = {
    "type": "object",
    "properties": {
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
        "note": {"type": "string", "maxLength": 8},
    },
    "required": ["color", "count", "ok", "note"],
}
ASK = [{"role": "user", "content": "Describe the item as JSON."}]


def schema_format(schema: dict[str, Any], name: str = "item") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def constrained(seed: int | None, schema: dict[str, Any] = ITEM, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "default",
        "messages": ASK,
        "max_tokens": 96,
        "response_format": schema_format(schema),
        **extra,
    }
    body.update({"temperature": 0} if seed is None else {"temperature": 1.0, "seed": seed})
    return body


def free(i: int, max_tokens: int = 32) -> dict[str, Any]:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": f"Tell me story number {i} about the sea."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def choice(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """The first choice, with the response's usage added."""
    resp = http.post(CHAT, json=body)
    assert resp.status_code == 200, resp.text
    return {**resp.json()["choices"][0], "usage": resp.json()["usage"]}


def valid(content: str, schema: dict[str, Any]) -> Any:
    value = json.loads(content)
    jsonschema.validate(value, schema)
    return value


# -- one server, one request at a time ---------------------------------------------------


def test_json_object_greedy(tiny_http: httpx.Client) -> None:
    body = {"model": "default", "messages": ASK, "max_tokens": 300, "temperature": 0}
    out = choice(tiny_http, {**body, "response_format": {"type": "json_object"}})
    assert out["finish_reason"] == "stop", out
    assert isinstance(json.loads(out["message"]["content"]), dict)
    # Without the constraint the same prompt is not JSON at all.
    plain = choice(tiny_http, {**body, "max_tokens": 40})["message"]["content"]
    with pytest.raises(ValueError):
        json.loads(plain)


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3, 4, 5])
def test_json_schema_outputs_validate(tiny_http: httpx.Client, seed: int | None) -> None:
    out = choice(tiny_http, constrained(seed))
    assert out["finish_reason"] == "stop", out
    valid(out["message"]["content"], ITEM)


def test_json_schema_nested_and_required_keys(tiny_http: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -5, "maximum": 5},
                    "y": {"type": "integer", "minimum": -5, "maximum": 5},
                },
                "required": ["x", "y"],
            },
            "kind": {"enum": ["dot", "cross"]},
        },
        "required": ["point", "kind"],
    }
    for seed in (7, 8):
        out = choice(tiny_http, constrained(seed, schema))
        value = valid(out["message"]["content"], schema)
        assert set(value) == {"point", "kind"}  # closed objects: no invented keys


def test_json_schema_through_the_sdk_and_stream(tiny_server: str) -> None:
    with openai_client(tiny_server) as client:
        args = {"model": "default", "messages": ASK, "max_tokens": 96, "temperature": 0}
        fmt = schema_format(ITEM)
        full = client.chat.completions.create(response_format=fmt, **args)
        text = full.choices[0].message.content
        valid(text, ITEM)
        chunks = client.chat.completions.create(response_format=fmt, stream=True, **args)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


@pytest.mark.parametrize(
    "response_format",
    [
        schema_format({"type": "object", "properties": {"a": {"type": "nonsense"}}}),
        schema_format({"type": "object", "required": 5}),
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": "not an object"}},
        {"type": "xml"},
    ],
)
def test_invalid_response_format_is_400(tiny_http: httpx.Client, response_format: Any) -> None:
    body = {
        "model": "default",
        "messages": ASK,
        "max_tokens": 4,
        "response_format": response_format,
    }
    error = assert_openai_error(tiny_http.post(CHAT, json=body), 400)
    assert "response_format" in (error["param"] or "") + error["message"]


# -- a batched server: constrained and unconstrained requests together --------------------


@pytest.fixture(scope="module")
def batched(launch_server: LaunchServer) -> Iterator[httpx.Client]:
    url = launch_server("--runtime-mode", "batched").base_url
    with httpx.Client(base_url=url, timeout=120) as http:
        yield http


def status(http: httpx.Client) -> dict[str, Any]:
    return dict(http.get("/v1/status").json())


def test_constrained_and_free_requests_share_batches(batched: httpx.Client) -> None:
    serial = [choice(batched, free(i))["message"]["content"] for i in range(4)]
    bodies = [constrained(seed) for seed in range(6)]
    mixed = [bodies[0], free(0), bodies[1], free(1), bodies[2], free(2), bodies[3], free(3)]
    mixed += bodies[4:]
    wait_idle(str(batched.base_url))
    steps_before = status(batched)["steps_executed"]
    with ThreadPoolExecutor(len(mixed)) as pool:
        outs = list(pool.map(lambda b: choice(batched, b), mixed))
    steps = status(batched)["steps_executed"] - steps_before

    free_outs = [
        o["message"]["content"]
        for b, o in zip(mixed, outs, strict=True)
        if "response_format" not in b
    ]
    assert free_outs == serial, "a grammar mask changed an unconstrained request"
    for body, out in zip(mixed, outs, strict=True):
        if "response_format" in body:
            assert out["finish_reason"] == "stop", out
            valid(out["message"]["content"], ITEM)
    tokens = sum(out["usage"]["completion_tokens"] for out in outs)
    # Shared decode steps: fewer steps than tokens generated.
    assert steps < tokens, f"{steps} steps for {tokens} tokens: requests were not batched"
    assert status(batched)["runtime"]["mode"] == "batched"


def test_greedy_constrained_output_is_batch_invariant(batched: httpx.Client) -> None:
    alone = choice(batched, constrained(None))["message"]["content"]
    with ThreadPoolExecutor(5) as pool:
        outs = list(
            pool.map(
                lambda b: choice(batched, b), [constrained(None), *[free(i) for i in range(4)]]
            )
        )
    assert outs[0]["message"]["content"] == alone


# -- the embedded model ---------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "enum": ["Paris", "London", "Tokyo", "New York"]},
        "likes_tea": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "likes_tea"],
}


@pytest.mark.slow
def test_embedded_model_json_schema_20_of_20(launch_server: LaunchServer) -> None:
    url = launch_server(model=None, startup_timeout_s=600).base_url
    ask = [{"role": "user", "content": "Invent a person. Answer in JSON with name, age, city."}]
    person = {
        "model": "default",
        "messages": ask,
        "max_tokens": 64,
        "response_format": schema_format(PERSON, "person"),
        "temperature": 0.8,
    }
    bodies: list[dict[str, Any]] = [{**person, "seed": seed} for seed in range(20)]
    bodies += [free(i, max_tokens=24) for i in range(3)]
    with httpx.Client(base_url=url, timeout=600) as http:
        with ThreadPoolExecutor(len(bodies)) as pool:
            outs = list(pool.map(lambda b: choice(http, b), bodies))
        serial = [choice(http, free(i, max_tokens=24))["message"]["content"] for i in range(3)]
    people = [valid(o["message"]["content"], PERSON) for o in outs[:20]]
    assert len(people) == 20
    assert all(o["finish_reason"] == "stop" for o in outs[:20])
    assert [o["message"]["content"] for o in outs[20:]] == serial
