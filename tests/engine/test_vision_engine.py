"""Vision requests in the continuous-batching engine, against mlx-vlm's own generate.

Tiny random-weight VLMs of two families (tests/fixtures/tiny_vlms.py): Qwen2-VL
(M-RoPE, dynamic resolution) and LLaVA (CLIP tower, 1-D RoPE).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlx_vlm")

from tests.fixtures.tiny_vlms import build_tiny_vlm, make_image
from vllm_mlx.backend.loader import load_model
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.config import CacheConfig, EngineConfig, ModelConfig, RuntimeMode
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import (
    EngineError,
    EngineStats,
    ErrorKind,
    Finished,
    GenerationRequest,
    ImageInput,
    SamplingParams,
    TokenDelta,
)

MAX_TOKENS = 8
TIMEOUT_S = 120.0


def image_input(seed: int, size: tuple[int, int] = (56, 56)) -> ImageInput:
    data = make_image(seed, size)
    return ImageInput(data, hashlib.sha256(data).hexdigest())


@pytest.fixture(scope="module", params=["qwen2_vl", "llava"])
def vlm_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    family = str(request.param)
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / family, family)


@pytest.fixture(scope="module")
def loaded(vlm_path: Path) -> LoadedModel:
    return load_model(ModelConfig(model=str(vlm_path)))


def user(text: str, images: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(images)]
    parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def reference(path: Path, prompt: list[int], images: list[ImageInput], n: int) -> list[int]:
    """mlx-vlm's own greedy generation loop on the same prompt ids and pixels."""
    import mlx.core as mx
    import numpy as np
    from mlx_vlm.generate import generate_step
    from mlx_vlm.utils import load
    from PIL import Image

    model, processor = _reference_model(path)
    pil = [Image.open(io.BytesIO(i.data)).convert("RGB") for i in images]
    extra: dict[str, Any] = {}
    pixels = None
    if pil:
        out = dict(processor.image_processor(pil, return_tensors="np"))
        pixels = mx.array(np.asarray(out.pop("pixel_values")))
        extra = {k: mx.array(np.asarray(v)) for k, v in out.items()}
    ids = mx.array([prompt])
    tokens = []
    for token, _ in generate_step(ids, model, pixels, None, max_tokens=n, temperature=0.0, **extra):
        tokens.append(int(token))
        if len(tokens) == n:
            break
    del load
    return tokens


_REFERENCE: dict[Path, tuple[Any, Any]] = {}


def _reference_model(path: Path) -> tuple[Any, Any]:
    from mlx_vlm.utils import load

    if path not in _REFERENCE:
        _REFERENCE[path] = load(str(path))
    return _REFERENCE[path]


def run_engine(
    loaded: LoadedModel,
    requests: list[GenerationRequest],
    **config: Any,
) -> tuple[list[list[int]], EngineClient]:
    """Every request's output ids (all submitted at once), and the stopped client."""

    async def main() -> tuple[list[list[int]], EngineClient]:
        client = EngineClient(lambda: loaded, EngineConfig(**config))
        await client.start()
        try:
            outs = await asyncio.wait_for(
                asyncio.gather(*(_collect(client, r) for r in requests)), TIMEOUT_S
            )
        finally:
            await client.stop()
        return list(outs), client

    return asyncio.run(main())


async def _collect(client: EngineClient, request: GenerationRequest) -> list[int]:
    ids, _ = await _collect_finished(client, request)
    return ids


def request(rid: str, prompt: list[int], images: tuple[ImageInput, ...] = ()) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    return GenerationRequest(
        request_id=rid, prompt_token_ids=tuple(prompt), sampling=sampling, images=images
    )


def test_image_prompt_matches_mlx_vlm(loaded: LoadedModel, vlm_path: Path) -> None:
    assert loaded.prompter is not None
    img = image_input(1, (112, 84))
    prompt = loaded.prompter.encode_chat(user("What is in this picture?", 1), [img])
    want = reference(vlm_path, prompt, [img], MAX_TOKENS)
    (got,), _ = run_engine(loaded, [request("a", prompt, (img,))])
    assert got == want


def test_mixed_batch_of_eight_matches_mlx_vlm(loaded: LoadedModel, vlm_path: Path) -> None:
    """Text and image requests (one with two images) share batched steps."""
    assert loaded.prompter is not None
    cases: list[tuple[list[int], tuple[ImageInput, ...]]] = []
    for i in range(8):
        if i % 2:
            text = [{"role": "user", "content": f"Tell me a story number {i}."}]
            cases.append((loaded.prompter.encode_chat(text, []), ()))
            continue
        imgs = tuple(image_input(10 + i + k, (56 + 28 * k, 56)) for k in range(1 + (i == 4)))
        prompt = loaded.prompter.encode_chat(user(f"Describe picture {i}.", len(imgs)), imgs)
        cases.append((prompt, imgs))
    want = [reference(vlm_path, p, list(imgs), MAX_TOKENS) for p, imgs in cases]
    reqs = [request(f"r{i}", p, imgs) for i, (p, imgs) in enumerate(cases)]
    got, _ = run_engine(loaded, reqs, runtime_mode=RuntimeMode.BATCHED, max_num_seqs=8)
    assert got == want


def test_chunk_boundary_inside_an_image(loaded: LoadedModel, vlm_path: Path) -> None:
    """Prefill chunks of 3 tokens split every image; the output is unchanged."""
    assert loaded.prompter is not None
    img = image_input(2, (112, 112))
    prompt = loaded.prompter.encode_chat(user("What is this?", 1), [img])
    want = reference(vlm_path, prompt, [img], MAX_TOKENS)
    (got,), _ = run_engine(loaded, [request("c", prompt, (img,))], prefill_chunk_tokens=3)
    assert got == want


def run_in_turn(
    loaded: LoadedModel, requests: list[GenerationRequest], **config: Any
) -> tuple[list[tuple[list[int], Finished]], EngineStats]:
    """Each request after the previous one has finished (so its blocks are cached)."""

    async def main() -> tuple[list[tuple[list[int], Finished]], EngineStats]:
        client = EngineClient(lambda: loaded, EngineConfig(**config))
        await client.start()
        outs = []
        try:
            for r in requests:
                outs.append(await asyncio.wait_for(_collect_finished(client, r), TIMEOUT_S))
            stats = client.stats()
        finally:
            await client.stop()
        return outs, stats

    return asyncio.run(main())


async def _collect_finished(
    client: EngineClient, request: GenerationRequest
) -> tuple[list[int], Finished]:
    ids: list[int] = []
    async for event in client.generate(request):
        if isinstance(event, TokenDelta):
            ids.extend(event.token_ids)
        elif isinstance(event, EngineError):
            raise AssertionError(event.message)
        elif isinstance(event, Finished):
            return ids, event
    raise AssertionError("no Finished event")


SMALL_BLOCKS = CacheConfig(block_size=4)


def test_different_image_shares_no_image_blocks(loaded: LoadedModel) -> None:
    """Same text, another image: a different answer, and only the text before it is reused."""
    assert loaded.prompter is not None and loaded.vision is not None
    a, b = image_input(3), image_input(4)
    first = loaded.prompter.encode_chat(user("What is this?", 1), [a])
    second = loaded.prompter.encode_chat(user("What is this?", 1), [b])
    assert first == second  # the token ids alone cannot tell the images apart
    image_at = loaded.vision.prepare(first, [a]).positions[0]
    outs, _ = run_in_turn(
        loaded, [request("a", first, (a,)), request("b", second, (b,))], cache=SMALL_BLOCKS
    )
    (out_a, _), (out_b, fin_b) = outs
    assert out_a != out_b
    assert fin_b.usage.cached_tokens <= image_at


def test_same_image_twice_hits_both_caches(loaded: LoadedModel) -> None:
    assert loaded.prompter is not None and loaded.vision is not None
    img = image_input(5, (84, 56))
    prompt = loaded.prompter.encode_chat(user("And this one?", 1), [img])
    media = loaded.vision.prepare(prompt, [img])
    before = loaded.vision.cache_stats()
    outs, stats = run_in_turn(
        loaded, [request("a", prompt, (img,)), request("b", prompt, (img,))], cache=SMALL_BLOCKS
    )
    (out_a, fin_a), (out_b, fin_b) = outs
    assert out_a == out_b
    assert fin_a.usage.cached_tokens == 0
    assert fin_b.usage.cached_tokens > media.positions[-1]  # the image's KV came from the cache
    assert stats.vision_cache is not None
    assert stats.vision_cache.hits == before.hits + 2  # both requests: prepared above first
    assert stats.vision_cache.misses == before.misses


def test_disabled_vision_cache_encodes_every_time(vlm_path: Path) -> None:
    loaded = load_model(ModelConfig(model=str(vlm_path), vision_cache_size=0))
    assert loaded.prompter is not None and loaded.vision is not None
    img = image_input(6)
    prompt = loaded.prompter.encode_chat(user("Again?", 1), [img])
    outs, stats = run_in_turn(loaded, [request("a", prompt, (img,)), request("b", prompt, (img,))])
    assert outs[0][0] == outs[1][0]
    assert stats.vision_cache is not None
    assert not stats.vision_cache.enabled
    assert (stats.vision_cache.hits, stats.vision_cache.misses) == (0, 2)
    assert stats.vision_cache.entries == 0


def test_images_on_a_text_model_are_refused(tiny_llama_path: Path) -> None:
    loaded = load_model(ModelConfig(model=str(tiny_llama_path)))
    img = image_input(7)

    async def main() -> EngineError:
        client = EngineClient(lambda: loaded, EngineConfig())
        await client.start()
        try:
            events = [e async for e in client.generate(request("x", [1, 2, 3], (img,)))]
        finally:
            await client.stop()
        assert isinstance(events[-1], EngineError)
        return events[-1]

    error = asyncio.run(main())
    assert error.kind is ErrorKind.INVALID_REQUEST
    assert "images" in error.message


def test_image_token_mismatch_is_invalid(loaded: LoadedModel) -> None:
    """Image tokens that do not add up to the images' counts: a 400, not a crash."""
    assert loaded.prompter is not None
    img = image_input(8)
    prompt = loaded.prompter.encode_chat(user("Hm?", 1), [img])

    async def main() -> list[Any]:
        client = EngineClient(lambda: loaded, EngineConfig())
        await client.start()
        try:
            bad = request("bad", prompt, (img, img))
            good = request("good", prompt, (img,))
            return [[e async for e in client.generate(r)] for r in (bad, good)][0:2]
        finally:
            await client.stop()

    bad_events, good_events = asyncio.run(main())
    assert isinstance(bad_events[-1], EngineError)
    assert bad_events[-1].kind is ErrorKind.INVALID_REQUEST
    assert isinstance(good_events[-1], Finished)
