"""A vision model served end to end: capabilities, chats with images, the vision cache
in /v1/status and /metrics, and the prefix cache across the same image twice."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import wait_idle

pytest.importorskip("mlx_vlm")

from tests.fixtures.tiny_vlms import build_tiny_vlm, make_image


@pytest.fixture(scope="module")
def vlm_http(
    launch_server: LaunchServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    path: Path = build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl", "qwen2_vl")
    server = launch_server("--block-size", "4", model=path)
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


def _chat(client: httpx.Client, image: bytes, text: str) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    body = {
        "model": "default",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": text},
                ],
            }
        ],
        "max_tokens": 6,
        "temperature": 0,
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_capabilities_report_images(vlm_http: httpx.Client, tiny_http: httpx.Client) -> None:
    assert vlm_http.get("/v1/capabilities").json()["modalities"]["image"] is True
    assert tiny_http.get("/v1/capabilities").json()["modalities"]["image"] is False
    assert tiny_http.get("/v1/status").json()["cache"]["vision"] is None


def test_same_image_twice_hits_the_vision_and_prefix_caches(vlm_http: httpx.Client) -> None:
    image = make_image(42, (84, 84))
    before = vlm_http.get("/v1/status").json()["cache"]["vision"]
    first = _chat(vlm_http, image, "What is this?")
    second = _chat(vlm_http, image, "What is this?")
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    cached = (second["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert cached > 9  # the image's tokens (9 for 84x84) came from the prefix cache
    after = wait_idle(str(vlm_http.base_url))["cache"]["vision"]
    assert after["enabled"] is True and after["capacity"] == 100
    assert after["misses"] == before["misses"] + 1
    assert after["hits"] == before["hits"] + 1
    assert after["entries"] == before["entries"] + 1
    metrics = vlm_http.get("/metrics").text
    assert "vllm_mlx:vision_cache_hits_total" in metrics
    assert "vllm_mlx:vision_cache_entries" in metrics


def test_another_image_gives_another_answer(vlm_http: httpx.Client) -> None:
    a = _chat(vlm_http, make_image(1, (56, 56)), "Describe it.")
    b = _chat(vlm_http, make_image(2, (56, 56)), "Describe it.")
    assert a["choices"][0]["message"]["content"] != b["choices"][0]["message"]["content"]
