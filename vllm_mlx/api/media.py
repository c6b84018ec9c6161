"""Image parts of a request → checked :class:`~vllm_mlx.engine.types.ImageInput`s.

Both protocols name an image inline (base64) or by URL::

    OpenAI     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO..."}}
               {"type": "image_url", "image_url": {"url": "https://host/cat.png", "detail": "low"}}
    Anthropic  {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": "iVBO..."}}
               {"type": "image", "source": {"type": "url", "url": "https://host/cat.png"}}

Adapters turn each part into an :class:`ImageSource` naming where it stood
(``messages[1].content[2]``); :func:`load_images` fetches (``image_fetch.py``),
decodes and checks them, in order. Every bad image is a 400 that names its part.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.image_fetch import FETCH_TIMEOUT_S, FetchPolicy, ImageError, ImageFetcher
from vllm_mlx.engine.types import ImageInput

log = logging.getLogger(__name__)

# Formats Pillow may open: the ones clients send. Others (EPS runs Ghostscript) never.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
UNSUPPORTED_MODALITY = "unsupported_modality"


@dataclass(frozen=True)
class ImageSource:
    """One image part, as sent: base64 data or a URL."""

    location: str  # where the part stood, e.g. "messages[1].content[2]": errors name it
    data: str | None = None  # base64 of the file (data: URL or Anthropic base64 source)
    url: str | None = None  # http(s) URL to fetch


def invalid_image(location: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{location}: {reason}", param="messages", code="invalid_image")


def no_images(location: str, model: str | None = None) -> InvalidRequest:
    """The 400 of an image sent to a text-only model."""
    who = f"model '{model}'" if model else "this model"
    return InvalidRequest(
        f"{location}: {who} does not accept images; send text content only",
        param="messages",
        code=UNSUPPORTED_MODALITY,
    )


def openai_image(url: str | None, location: str) -> ImageSource:
    """The URL of an OpenAI ``image_url`` part: a data: URL or an http(s) URL."""
    if not url:
        raise invalid_image(location, "image_url.url must be a data: URL or an http(s) URL")
    if url[:5].lower() == "data:":
        return _data_url(url, location)
    if url.split(":", 1)[0].lower() in ("http", "https"):
        return ImageSource(location, url=url)
    raise invalid_image(location, "image_url.url must be a data: URL or an http(s) URL")


def _data_url(url: str, location: str) -> ImageSource:
    """``data:image/png;base64,...`` (RFC 2397); images are binary, so base64 only."""
    header, comma, payload = url[5:].partition(",")
    params = [p.strip().lower() for p in header.split(";")]
    if not comma or "base64" not in params[1:]:
        raise invalid_image(location, "a data: URL image must be base64 (data:image/...;base64,)")
    if not params[0].startswith("image/"):
        raise invalid_image(location, f"data: URL media type '{params[0]}' is not an image")
    return ImageSource(location, data=payload)


def anthropic_image(source: dict[str, Any], location: str) -> ImageSource:
    """An Anthropic image ``source``: ``base64`` (media_type, data) or ``url``."""
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not media_type.startswith("image/"):
            raise invalid_image(location, "source.media_type must be an image type (image/png)")
        if not isinstance(data, str) or not data:
            raise invalid_image(location, "source.data must be the image's base64")
        return ImageSource(location, data=data)
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or url.split(":", 1)[0].lower() not in ("http", "https"):
            raise invalid_image(location, "source.url must be an http(s) URL")
        return ImageSource(location, url=url)
    raise invalid_image(location, f"image source type '{kind}' is not supported (base64, url)")


def decode_base64(data: str, max_bytes: int) -> bytes:
    """Standard base64 (line breaks and missing padding tolerated), at most ``max_bytes``."""
    text = "".join(data.split())
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ImageError(f"image is larger than {max_bytes / 2**20:g} MB")
    try:
        out = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("image data is not valid base64") from exc
    if len(out) > max_bytes:
        raise ImageError(f"image is larger than {max_bytes / 2**20:g} MB")
    return out


def check_image(data: bytes) -> None:
    """Refuse what Pillow cannot open, verify and decode, or a decompression bomb."""
    try:
        from PIL import Image
    except ImportError as exc:  # the vision extra brings it; a vision model needs it anyway
        raise ImageError("the server cannot decode images (Pillow is not installed)") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                img.verify()  # checksums and structure; the image is unusable after it
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                img.load()  # the pixels: truncated files fail here
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageError("image has too many pixels") from exc
        except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ...
            log.debug("image refused: %s: %s", type(exc).__name__, exc)
            raise ImageError("image could not be decoded (PNG, JPEG, WebP, GIF or BMP)") from exc


async def load_image(source: ImageSource, fetcher: ImageFetcher) -> ImageInput:
    """One source fetched or decoded, then checked; a 400 naming its part if bad."""
    try:
        if source.url is not None:
            data = await fetcher.fetch(source.url)
        else:
            data = await asyncio.to_thread(
                decode_base64, source.data or "", fetcher.policy.max_bytes
            )
        await asyncio.to_thread(check_image, data)
    except ImageError as exc:
        raise invalid_image(source.location, str(exc)) from exc
    return ImageInput(data=data, digest=hashlib.sha256(data).hexdigest())


async def load_images(
    sources: Sequence[ImageSource], ctx: ServingContext, fetcher: ImageFetcher | None = None
) -> tuple[ImageInput, ...]:
    """The request's images in order; a text-only model refuses the first before any fetch.

    One at a time: the first bad image answers the request, and a request with many
    URLs never opens many connections at once.
    """
    if not sources:
        return ()
    if ctx.vision is None:
        raise no_images(sources[0].location, ctx.model_id)
    if fetcher is None:
        timeout = min(FETCH_TIMEOUT_S, ctx.policy.timeout_s)
        policy = FetchPolicy(allow_local=ctx.policy.allow_local_image_urls, timeout_s=timeout)
        fetcher = ImageFetcher(policy)
    return tuple([await load_image(source, fetcher) for source in sources])
