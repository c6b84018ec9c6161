"""backend.vision, vision_cache and engine.kv.image_keys: prompts with images, the LRU, keys."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from vllm_mlx.backend.errors import LoaderError
from vllm_mlx.backend.vision import VisionInputError, VisionPrompter, is_vision_config
from vllm_mlx.backend.vision_cache import VisionCache
from vllm_mlx.config import ModelConfig
from vllm_mlx.engine.kv.image_keys import cache_keys, image_key
from vllm_mlx.engine.types import ImageInput


def test_vision_cache_is_an_lru_with_counters() -> None:
    cache: VisionCache[str] = VisionCache(2)
    assert cache.get("a") is None
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")  # evicts b
    assert cache.get("b") is None
    assert cache.get("c") == "C"
    stats = cache.stats()
    assert (stats.entries, stats.hits, stats.misses, stats.enabled) == (2, 2, 2, True)


def test_vision_cache_of_size_zero_stores_nothing() -> None:
    cache: VisionCache[str] = VisionCache(0)
    cache.put("a", "A")
    assert cache.get("a") is None
    assert not cache.stats().enabled
    with pytest.raises(ValueError):
        VisionCache(-1)


def test_image_keys_replace_image_tokens_by_their_image() -> None:
    tokens = [1, 2, 9, 9, 9, 3, 9, 9, 4]
    spans = [(2, 3, "ab" * 32), (6, 2, "cd" * 32)]
    keys = cache_keys(tokens, [2, 3, 4, 6, 7], spans)
    a, c = image_key("ab" * 32), image_key("cd" * 32)
    assert keys == [1, 2, a, a, a, 3, c, c, 4]
    assert a < 0 and c < 0 and a != c  # never a real token id
    assert tokens == [1, 2, 9, 9, 9, 3, 9, 9, 4]  # the input is left alone


def test_vision_config_detection() -> None:
    assert is_vision_config({"model_type": "qwen2_vl", "vision_config": {"depth": 2}})
    assert not is_vision_config({"model_type": "llama"})


def test_serving_a_vlm_without_mlx_vlm_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_vl", "vision_config": {}}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "mlx_vlm", None)  # import mlx_vlm raises ImportError
    from vllm_mlx.backend.loader import load_model

    with pytest.raises(LoaderError, match=r"pip install 'vllm-mlx\[vision\]'"):
        load_model(ModelConfig(model=str(tmp_path)))


# -- with mlx-vlm: the prompter on the tiny VLMs -------------------------------------


@pytest.fixture(scope="module", params=["qwen2_vl", "llava"])
def prompter_and_family(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[VisionPrompter, str]:
    pytest.importorskip("mlx_vlm")
    from tests.fixtures.tiny_vlms import build_tiny_vlm
    from vllm_mlx.backend.loader import load_model

    family = str(request.param)
    path = build_tiny_vlm(tmp_path_factory.mktemp("vlm") / family, family)
    loaded = load_model(ModelConfig(model=str(path)))
    assert loaded.prompter is not None and loaded.vision is not None
    return loaded.prompter, family


def _image(seed: int, size: tuple[int, int]) -> ImageInput:
    from tests.fixtures.tiny_vlms import make_image

    data = make_image(seed, size)
    return ImageInput(data, hashlib.sha256(data).hexdigest())


def test_image_token_count_follows_the_processor(
    prompter_and_family: tuple[VisionPrompter, str],
) -> None:
    prompter, family = prompter_and_family
    small, wide = _image(1, (56, 56)), _image(2, (112, 84))
    if family == "qwen2_vl":  # dynamic resolution: 14 px patches merged 2x2
        assert prompter.image_token_count(small) == 4
        assert prompter.image_token_count(wide) == 12
    else:  # LLaVA: a fixed grid
        assert prompter.image_token_count(small) == prompter.image_token_count(wide) == 4


def test_encode_chat_expands_each_image(prompter_and_family: tuple[VisionPrompter, str]) -> None:
    prompter, _ = prompter_and_family
    a, b = _image(1, (56, 56)), _image(2, (112, 84))
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "this"}, {"type": "image"}]},
    ]
    ids = prompter.encode_chat(messages, [a, b])
    want = prompter.image_token_count(a) + prompter.image_token_count(b)
    assert sum(1 for t in ids if t == prompter.image_token_id) == want
    plain = prompter.encode_chat([{"role": "user", "content": "hi"}], [])
    assert prompter.image_token_id not in plain


def test_encode_chat_refuses_bad_images(prompter_and_family: tuple[VisionPrompter, str]) -> None:
    prompter, _ = prompter_and_family
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    with pytest.raises(VisionInputError, match="1 image parts but 0"):
        prompter.encode_chat(messages, [])
    junk = ImageInput(b"not an image", hashlib.sha256(b"not an image").hexdigest())
    with pytest.raises(VisionInputError, match="decode"):
        prompter.encode_chat(messages, [junk])
