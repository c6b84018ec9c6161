"""The vision half of a vision-language model: prompts with images, and image features.

``mlx-vlm`` (the optional ``vision`` extra) supplies the model code and the HF
processor; this module wraps them in two small doors:

- :class:`VisionPrompter` (api side): a chat with images → token ids, each image's
  placeholder expanded to as many image tokens as the processor gives that image;
- :class:`VisionModel` (engine side): an image → its features in the language
  model's embedding space (through an LRU :class:`~vllm_mlx.backend.vision_cache.VisionCache`),
  and those features merged into a prompt chunk's embeddings at prefill.

Images travel as :class:`~vllm_mlx.engine.types.ImageInput` (bytes + sha256), so
neither side needs HTTP types.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vllm_mlx.backend.media import ImageInput, VisionCacheStats
from vllm_mlx.backend.vision_cache import VisionCache

VISION_EXTRA_HINT = "pip install 'vllm-mlx[vision]'"


class VisionInputError(ValueError):
    """An image the processor cannot take (undecodable, or a prompt it cannot render)."""


def _open_image(image: ImageInput) -> Any:
    """The image as an RGB PIL image (the processors want RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image.data)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VisionInputError(f"cannot decode the image: {exc}") from exc


class VisionPrompter:
    """Turns a chat with images into token ids, the way the model's processor does.

    Thread-safe: the api calls it from request handlers (HF processors are not
    re-entrant, so one lock serialises them; rendering is fast next to a forward).
    """

    def __init__(
        self,
        processor: Any,
        image_token_id: int,
        image_token: str,
        lock: threading.Lock | None = None,
    ) -> None:
        self._processor = processor  # HF ProcessorMixin (tokenizer + image processor)
        self.image_token_id = image_token_id  # the id every image token has in a prompt
        self._image_token = image_token  # its text, e.g. "<|image_pad|>" or "<image>"
        self._lock = lock or threading.Lock()  # shared with the engine's VisionModel

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        images: Sequence[ImageInput],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> list[int]:
        """Token ids of ``messages`` rendered with the processor's chat template.

        ``messages`` follow HF's convention: a message's ``content`` is a string or a
        list of parts, ``{"type": "text", "text": ...}`` and ``{"type": "image"}`` where
        an image stands. ``images`` are those images in the order their parts appear
        (across all messages); each placeholder is expanded to the image's tokens
        (Qwen2-VL: dynamic resolution, so the count depends on the image's size).
        Raises :class:`VisionInputError` when the image parts and ``images`` disagree
        or an image cannot be decoded.
        """
        parts = sum(_image_parts(m) for m in messages)
        if parts != len(images):
            raise VisionInputError(f"{parts} image parts but {len(images)} images were given")
        pil = [_open_image(image) for image in images]
        with self._lock:
            text = self._render(messages, tools, add_generation_prompt, template_kwargs)
            return self._tokenize(text, pil)

    def image_token_count(self, image: ImageInput) -> int:
        """How many prompt tokens ``image`` takes (what count_tokens reports for it)."""
        pil = _open_image(image)
        with self._lock:
            ids = self._tokenize(self._image_token, [pil])
        return sum(1 for t in ids if t == self.image_token_id)

    def _render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool,
        template_kwargs: dict[str, Any],
    ) -> str:
        kwargs = dict(template_kwargs)
        if tools:
            kwargs["tools"] = tools
        # Some processors (mlx-vlm's LLaVA) leave the template on their tokenizer.
        renderer = self._processor
        if not getattr(renderer, "chat_template", None):
            renderer = getattr(renderer, "tokenizer", renderer)
        try:
            text = renderer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
        except (ValueError, TypeError, KeyError) as exc:  # jinja errors are TemplateError
            raise VisionInputError(f"the chat template cannot render this chat: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("jinja2"):
                raise VisionInputError(f"the chat template failed: {exc}") from exc
            raise
        return str(text)

    def _tokenize(self, text: str, images: list[Any]) -> list[int]:
        """The processor expands each image placeholder of ``text`` and tokenizes it."""
        return [int(t) for t in _process(self._processor, text, images)["input_ids"][0]]


def _process(processor: Any, text: str, images: list[Any]) -> dict[str, Any]:
    """The processor's output for one prompt: ``input_ids`` (1, L), pixel values etc."""
    try:
        return dict(processor(text=[text], images=images or None, return_tensors="np"))
    except (ValueError, TypeError, OSError) as exc:
        raise VisionInputError(f"the processor cannot take this prompt: {exc}") from exc


def _image_parts(message: dict[str, Any]) -> int:
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image")


def is_vision_config(config: dict[str, Any]) -> bool:
    """Whether a config.json describes a vision-language model (it has a vision tower)."""
    return isinstance(config.get("vision_config"), dict)


def image_token_id(config: dict[str, Any]) -> int:
    """The placeholder id the model's merge replaces with image features."""
    for key in ("image_token_id", "image_token_index"):
        value = config.get(key)
        if isinstance(value, int):
            return value
    raise ValueError("the vision model's config names no image_token_id / image_token_index")


@dataclass(frozen=True)
class ImageFeatures:
    """One image through the vision tower, in the language model's embedding space."""

    embeds: Any  # mx.array (tokens, hidden): what replaces the image's placeholder tokens
    grid_thw: tuple[int, int, int] | None  # Qwen2-VL patch grid; None: fixed-size models

    @property
    def num_tokens(self) -> int:
        return int(self.embeds.shape[0])


@dataclass(frozen=True)
class PromptMedia:
    """A prompt's images, ready for prefill: what to merge where, and M-RoPE positions.

    Held by the engine's sequence from admission until it retires; chunked prefill
    takes the slice of features that falls in each chunk, so a chunk boundary may
    fall inside an image.
    """

    positions: tuple[int, ...]  # prompt positions of the image tokens, ascending
    features: Any  # mx.array (len(positions), hidden): their embeddings, in that order
    rope: Any  # mx.array (3, prompt_len) M-RoPE positions of the prompt; None: 1-D RoPE
    rope_delta: int  # after the prompt, token p sits at position p + rope_delta
    spans: tuple[tuple[int, int, str], ...]  # (first position, tokens, digest) per image

    def merge(self, start: int, length: int) -> tuple[list[int], Any] | None:
        """(offsets in the chunk, features) of the image tokens in [start, start + length)."""
        lo = bisect.bisect_left(self.positions, start)
        hi = bisect.bisect_left(self.positions, start + length)
        if lo == hi:
            return None
        return [p - start for p in self.positions[lo:hi]], self.features[lo:hi]

    def rope_window(self, start: int, length: int) -> Any:
        """(3, length) positions of tokens [start, start + length): the prompt's, then +delta."""
        import mlx.core as mx

        prompt_len = int(self.rope.shape[1])
        inside = max(0, min(start + length, prompt_len) - start)
        after = mx.arange(start + inside, start + length, dtype=mx.int32) + self.rope_delta
        parts = [self.rope[:, start : start + inside]] if inside else []
        parts.append(mx.broadcast_to(after[None], (3, length - inside)))
        return mx.concatenate(parts, axis=1)


class VisionModel:
    """The engine's door to a VLM: image features (cached) and the language model's forward."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        config: dict[str, Any],
        cache_size: int,
        lock: threading.Lock | None = None,
    ) -> None:
        self._model = model  # the mlx-vlm Model (vision tower + projector + language model)
        self._processor = processor
        self.processor_lock = lock or threading.Lock()  # the api's prompter uses it too
        self.language_model = model.language_model  # what the runner pages, like a text model
        self.image_token_id = image_token_id(config)
        self._image_token = str(getattr(processor, "image_token", "<image>"))
        # M-RoPE (Qwen2-VL family): 3-D positions that the language model cannot infer.
        self.mrope = hasattr(self.language_model, "get_rope_index")
        self.cache: VisionCache[ImageFeatures] = VisionCache(cache_size)
        settings = getattr(getattr(processor, "image_processor", None), "to_json_string", None)
        text = settings() if callable(settings) else repr(processor)
        self._settings = hashlib.sha256(str(text).encode()).hexdigest()[:16]

    def encode(self, image: ImageInput) -> ImageFeatures:
        """The image's features: from the cache, else decode, preprocess and run the tower."""
        key = f"{image.digest}:{self._settings}"
        found = self.cache.get(key)
        if found is not None:
            return found
        import mlx.core as mx
        import numpy as np

        pil = _open_image(image)
        with self.processor_lock:
            out = _process(self._processor, self._image_token, [pil])
        id_list = [int(t) for t in np.asarray(out.pop("input_ids"))[0]]
        ids = mx.array([id_list], dtype=mx.int32)
        out.pop("attention_mask", None)
        extra = {
            k: v if isinstance(v, mx.array) else mx.array(np.asarray(v)) for k, v in out.items()
        }
        pixels = extra.pop("pixel_values")
        # The model's own merge over a prompt of just this image: its rows are the features.
        embeds = self._model.get_input_embeddings(ids, pixels, **extra).inputs_embeds[0]
        where = [i for i, t in enumerate(id_list) if t == self.image_token_id]
        features = embeds[mx.array(where)]
        mx.eval(features)
        grid = extra.get("image_grid_thw")
        thw = None
        if grid is not None:
            t, h, w = (int(x) for x in np.asarray(grid).reshape(-1)[:3])
            thw = (t, h, w)
        found = ImageFeatures(features, thw)
        self.cache.put(key, found)
        return found

    def prepare(self, prompt: Sequence[int], images: Sequence[ImageInput]) -> PromptMedia:
        """Features and positions for a prompt whose image tokens are already expanded.

        Raises :class:`VisionInputError` when the prompt's image tokens and the images'
        token counts disagree.
        """
        import mlx.core as mx

        encoded = [self.encode(image) for image in images]
        positions = tuple(i for i, t in enumerate(prompt) if t == self.image_token_id)
        if sum(f.num_tokens for f in encoded) != len(positions):
            counts = ", ".join(str(f.num_tokens) for f in encoded)
            raise VisionInputError(
                f"the prompt has {len(positions)} image tokens; its images take {counts}"
            )
        spans, at = [], 0
        for image, feats in zip(images, encoded, strict=True):
            spans.append((positions[at], feats.num_tokens, image.digest))
            at += feats.num_tokens
        features = mx.concatenate([f.embeds for f in encoded], axis=0)
        rope, delta = None, 0
        if self.mrope:
            grids = [f.grid_thw for f in encoded]
            ids = mx.array([list(prompt)], dtype=mx.int32)
            thw = mx.array(grids, dtype=mx.int32) if all(grids) else None
            pos, deltas = self.language_model.get_rope_index(ids, thw)
            rope, delta = pos[:, 0, :].astype(mx.int32), int(deltas.reshape(-1)[0].item())
            mx.eval(rope)
        return PromptMedia(positions, features, rope, delta, tuple(spans))

    def chunk_inputs(
        self, tokens: Any, rows: Sequence[tuple[int, PromptMedia | None]]
    ) -> tuple[Any, Any]:
        """(embeddings or None, position ids or None) of a (B, L) prefill batch.

        Row b covers positions [rows[b][0], + L); rows without media are plain text.
        """
        import mlx.core as mx

        length = int(tokens.shape[1])
        embeds = None
        for b, (start, media) in enumerate(rows):
            found = media.merge(start, length) if media is not None else None
            if found is None:
                continue
            if embeds is None:
                embeds = self.language_model.model.embed_tokens(tokens)
            offsets, features = found
            row = embeds[b]
            row[mx.array(offsets)] = features.astype(row.dtype)
            embeds[b] = row
        if not self.mrope:
            return embeds, None
        windows = [
            m.rope_window(s, length)
            if m is not None and m.rope is not None
            else mx.broadcast_to(mx.arange(s, s + length, dtype=mx.int32)[None], (3, length))
            for s, m in rows
        ]
        return embeds, mx.stack(windows, axis=1)

    def decode_positions(self, positions: Any, deltas: Sequence[int]) -> Any:
        """(3, B, 1) M-RoPE ids of a decode step: each row's position plus its delta."""
        import mlx.core as mx

        pos = positions + mx.array(list(deltas), dtype=mx.int32)
        return mx.broadcast_to(pos[None, :, None], (3, pos.shape[0], 1))

    def forward(self, tokens: Any, cache: Any, embeds: Any = None, positions: Any = None) -> Any:
        """Logits of the language model over paged caches (embeddings merged, if given)."""
        out = self.language_model(tokens, inputs_embeds=embeds, cache=cache, position_ids=positions)
        return out.logits

    def cache_stats(self) -> VisionCacheStats:
        return self.cache.stats()
