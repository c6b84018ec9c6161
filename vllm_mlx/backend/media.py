"""What a vision prompt carries into the engine and what the vision cache reports.

Plain values at the bottom floor, so the api, the engine and the backend share them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageInput:
    """One image of a request, fetched, decoded and checked by ``api/media.py``."""

    data: bytes  # the image file as received (PNG, JPEG, WebP, GIF ...)
    digest: str  # sha256 hex of ``data``: the vision cache and the KV block hashes key on it


@dataclass(frozen=True)
class VisionCacheStats:
    """The vision-tower output cache of a vision model (backend.vision_cache)."""

    enabled: bool  # False: --disable-mllm-vision-cache
    capacity: int  # entries kept at most (--mllm-vision-cache-size)
    entries: int
    hits: int  # images served from the cache, cumulative
    misses: int  # images run through the vision tower, cumulative
