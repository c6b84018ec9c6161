"""Prefix-cache keys of a prompt with images: its image tokens stand for their image.

Every image's placeholder tokens share one id, so two prompts with the same text
and different images have the same token ids. The KV manager hashes and compares
this key sequence instead: each image token becomes a negative number drawn from
its image's sha256 (never a real token id), so a block's chain hash covers the
content of every image in or before it. The same image again gives the same keys
and shares its blocks; another image never does.
"""

from __future__ import annotations

from collections.abc import Sequence

_DIGEST_HEX = 15  # 60 bits of the sha256: collisions are negligible, ints stay small


def image_key(digest: str) -> int:
    """The key of every token of the image whose sha256 hex is ``digest``."""
    return -1 - int(digest[:_DIGEST_HEX], 16)


def cache_keys(
    tokens: Sequence[int],
    image_positions: Sequence[int],
    spans: Sequence[tuple[int, int, str]],
) -> list[int]:
    """``tokens`` with the image tokens replaced by their image's key.

    ``image_positions`` are the image tokens' positions in order; ``spans`` give each
    image's token count and digest, in the same order (first position unused here).
    """
    keys = list(tokens)
    at = 0
    for _first, count, digest in spans:
        key = image_key(digest)
        for pos in image_positions[at : at + count]:
            keys[pos] = key
        at += count
    return keys
