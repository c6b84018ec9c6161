"""/v1/completions through the official OpenAI SDK: text and token-id prompts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.server import assert_openai_error, openai_client

PROMPT = "Once upon a time, in a small village by the sea,"
WINDOW = 2048


@pytest.fixture(scope="module")
def client(tiny_server: str) -> Iterator[Any]:
    with openai_client(tiny_server) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def prompt_ids(tiny_llama_path: Path) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_llama_path / "tokenizer.json"))
    return tokenizer.encode(PROMPT).ids


def complete(client: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "default")
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 16)
    return client.completions.create(**kwargs)


def stream_texts(client: Any, **kwargs: Any) -> tuple[dict[int, str], list[Any]]:
    chunks = list(complete(client, stream=True, **kwargs))
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    return texts, chunks


def test_non_stream(client: Any, prompt_ids: list[int]) -> None:
    resp = complete(client, max_tokens=12)
    assert resp.object == "text_completion"
    assert resp.id and isinstance(resp.created, int) and resp.model
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert isinstance(choice.text, str) and choice.text.strip()
    assert not choice.text.startswith(PROMPT), "echo is off by default"
    assert choice.finish_reason == "length"
    assert resp.usage.prompt_tokens == len(prompt_ids)
    assert resp.usage.completion_tokens == 12
    assert resp.usage.total_tokens == len(prompt_ids) + 12


def test_stream_matches_non_stream(client: Any) -> None:
    expected = complete(client, max_tokens=20).choices[0].text
    texts, chunks = stream_texts(client, max_tokens=20)
    assert texts == {0: expected}
    assert all(c.object == "text_completion" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    reasons = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert reasons == ["length"]


def test_stream_usage_only_when_asked(client: Any) -> None:
    _, chunks = stream_texts(client, max_tokens=4, stream_options={"include_usage": True})
    *body, last = chunks
    assert last.choices == []
    assert last.usage.completion_tokens == 4
    assert all(c.usage is None for c in body)
    _, plain = stream_texts(client, max_tokens=4)
    assert all(c.usage is None for c in plain)


def test_token_id_prompt_matches_text_prompt(client: Any, prompt_ids: list[int]) -> None:
    by_text = complete(client, max_tokens=16)
    by_ids = complete(client, prompt=prompt_ids, max_tokens=16)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(prompt_ids)


def test_token_id_prompt_stream(client: Any, prompt_ids: list[int]) -> None:
    expected = complete(client, max_tokens=10).choices[0].text
    texts, _ = stream_texts(client, prompt=prompt_ids, max_tokens=10)
    assert texts == {0: expected}


def test_batch_of_prompts(client: Any, prompt_ids: list[int]) -> None:
    other = "The weather today is"
    single_other = complete(client, prompt=other, max_tokens=8).choices[0].text
    single = complete(client, max_tokens=8).choices[0].text
    resp = complete(client, prompt=[PROMPT, other], max_tokens=8)
    by_index = {c.index: c.text for c in resp.choices}
    assert by_index == {0: single, 1: single_other}
    resp_ids = complete(client, prompt=[prompt_ids, prompt_ids], max_tokens=8)
    assert [c.text for c in sorted(resp_ids.choices, key=lambda c: c.index)] == [single, single]


def test_n_two(client: Any) -> None:
    resp = complete(client, n=2, max_tokens=6)
    assert sorted(c.index for c in resp.choices) == [0, 1]
    assert resp.choices[0].text == resp.choices[1].text
    assert resp.usage.completion_tokens == 12


def test_stop_string(client: Any) -> None:
    full = complete(client, max_tokens=40).choices[0].text
    mid = len(full) // 2
    stop = full[mid : mid + 3]
    cut = full[: full.find(stop)]
    resp = complete(client, max_tokens=40, stop=[stop])
    assert resp.choices[0].text == cut
    assert resp.choices[0].finish_reason == "stop"
    texts, _ = stream_texts(client, max_tokens=40, stop=stop)
    assert texts == {0: cut}


def test_max_tokens_length(client: Any) -> None:
    resp = complete(client, max_tokens=1)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 1


def test_logprobs(client: Any) -> None:
    resp = complete(client, max_tokens=6, logprobs=2)
    logprobs = resp.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 6
    assert "".join(logprobs.tokens) == resp.choices[0].text
    assert all(lp <= 1e-5 for lp in logprobs.token_logprobs)
    assert len(logprobs.top_logprobs) == 6
    for token, lp, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert 1 <= len(top) <= 2
        assert all(v <= 1e-5 for v in top.values())
        # Greedy: the chosen token is the most likely alternative.
        assert max(top.values()) == pytest.approx(lp, abs=1e-4)
        assert token in top
    offsets = logprobs.text_offset
    assert offsets == sorted(offsets)


def test_seed_reproducible(client: Any) -> None:
    a = complete(client, temperature=1.0, seed=99, max_tokens=12).choices[0].text
    b = complete(client, temperature=1.0, seed=99, max_tokens=12).choices[0].text
    assert a == b


def test_default_and_unknown_model_names(client: Any) -> None:
    listed = client.models.list().data[0].id
    names = ("default", listed, "some-unknown-model")
    texts = {complete(client, model=m, max_tokens=5).choices[0].text for m in names}
    assert len(texts) == 1


def test_prompt_longer_than_window_is_400(tiny_http: httpx.Client) -> None:
    body = {"model": "default", "prompt": "the sea and the storm " * 1200, "max_tokens": 4}
    resp = tiny_http.post("/v1/completions", json=body)
    error = assert_openai_error(resp, 400)
    assert str(WINDOW) in error["message"]


def test_long_token_prompt_is_400(client: Any, prompt_ids: list[int]) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        complete(client, prompt=prompt_ids * 400, max_tokens=4)
    assert str(WINDOW) in str(excinfo.value)
