"""GET {root}/v1/status before, during and after a level: the server's own cache view.

vllm-mlx answers with (among others)::

    {"num_running": 3, "num_waiting": 0,
     "cache": {"type": "paged_cache", "hit_rate": 0.42, "block_size": 16,
               "blocks_total": 4096, "blocks_used": 120, ...},
     "runtime": {"mode": "batched", ...},
     "requests": [{"request_id": "...", "cache_hit_type": "prefix", ...}]}

Other servers lack the endpoint or some fields. Nothing here raises for that:
a missing field is None ("absent" in the report), a missing endpoint leaves
``available`` False with the reason in ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from vllm_mlx.bench.config import BenchConfig

STATUS_TIMEOUT_S = 5.0  # one status request; a slow answer must not stall a level's end
ERROR_CHARS = 120  # how much of a failed status answer goes into the report


def status_url(base_url: str) -> str:
    """{root}/v1/status, where root is the base URL without its trailing /v1."""
    root = base_url.rstrip("/")
    root = root.removesuffix("/v1")
    return f"{root}/v1/status"


def make_status_client(cfg: BenchConfig) -> httpx.AsyncClient:
    """A client of its own, so polls never queue behind the level's streaming requests."""
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(STATUS_TIMEOUT_S))


@dataclass(frozen=True)
class StatusSnapshot:
    """One answer of /v1/status; every field is None when the server did not send it."""

    error: str | None = None  # why there is no answer (HTTP status, network error, not JSON)
    mode: str | None = None  # runtime.mode, e.g. "simple" or "batched"
    cache_type: str | None = None  # cache.type
    hit_rate: float | None = None  # cache.hit_rate: server-wide, since its start
    block_size: int | None = None  # cache.block_size, tokens per KV block
    blocks_total: int | None = None  # cache.blocks_total
    blocks_used: int | None = None  # cache.blocks_used: held by running requests
    num_running: int | None = None
    num_waiting: int | None = None
    hit_types: tuple[tuple[str, str], ...] = ()  # (request_id, cache_hit_type) listed

    @property
    def ok(self) -> bool:
        return self.error is None


def _field(obj: Any, *path: str, kind: type) -> Any:
    """obj[path[0]][path[1]]… when every step exists and the leaf is of ``kind``."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    if kind is float and isinstance(obj, int) and not isinstance(obj, bool):
        return float(obj)
    return obj if isinstance(obj, kind) and not isinstance(obj, bool) else None


def _hit_types(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    requests = obj.get("requests")
    if not isinstance(requests, list):
        return ()
    pairs = []
    for item in requests:
        rid, hit = _field(item, "request_id", kind=str), _field(item, "cache_hit_type", kind=str)
        if rid is not None and hit is not None:
            pairs.append((rid, hit))
    return tuple(pairs)


def parse_status(obj: Any) -> StatusSnapshot:
    """Pick the fields the bench reports out of a /v1/status body, tolerating any shape."""
    if not isinstance(obj, dict):
        return StatusSnapshot(error="status body is not a JSON object")
    return StatusSnapshot(
        mode=_field(obj, "runtime", "mode", kind=str),
        cache_type=_field(obj, "cache", "type", kind=str),
        hit_rate=_field(obj, "cache", "hit_rate", kind=float),
        block_size=_field(obj, "cache", "block_size", kind=int),
        blocks_total=_field(obj, "cache", "blocks_total", kind=int),
        blocks_used=_field(obj, "cache", "blocks_used", kind=int),
        num_running=_field(obj, "num_running", kind=int),
        num_waiting=_field(obj, "num_waiting", kind=int),
        hit_types=_hit_types(obj),
    )


async def fetch_status(client: httpx.AsyncClient, url: str) -> StatusSnapshot:
    """GET /v1/status once; never raises for server or network faults."""
    try:
        resp = await client.get(url)
    except httpx.HTTPError as exc:
        return StatusSnapshot(error=f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
    if resp.status_code != 200:
        return StatusSnapshot(error=f"HTTP {resp.status_code}")
    try:
        return parse_status(resp.json())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return StatusSnapshot(error=f"not JSON: {resp.text[:ERROR_CHARS]!r}")


@dataclass(frozen=True)
class ServerLevelStatus:
    """What /v1/status said around one level (None: absent from every answer)."""

    available: bool  # at least one status answer arrived
    error: str | None  # why the first request got no answer
    mode: str | None  # runtime.mode
    cache_type: str | None  # cache.type
    block_size: int | None  # cache.block_size
    blocks_total: int | None  # cache.blocks_total
    blocks_used_before: int | None  # cache.blocks_used before the level (other load)
    blocks_used_peak: int | None  # max cache.blocks_used over every answer
    num_running_peak: int | None  # max num_running over every answer
    num_waiting_peak: int | None  # max num_waiting over every answer
    hit_rate_before: float | None  # cache.hit_rate (server lifetime) before the level
    hit_rate_after: float | None  # ... and after it
    polls: int  # status answers received
    hit_types: dict[str, int] = field(default_factory=dict)  # requests seen per hit type


def _peak(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _first(values: list[Any]) -> Any:
    return next((v for v in values if v is not None), None)


def summarize_status(
    before: StatusSnapshot, samples: list[StatusSnapshot], after: StatusSnapshot
) -> ServerLevelStatus:
    """Fold the answers of one level (before, polls, after) into peaks and rates."""
    answers = [s for s in (before, *samples, after) if s.ok]
    kinds: dict[str, str] = {rid: hit for s in answers for rid, hit in s.hit_types}
    counts: dict[str, int] = {}
    for hit in kinds.values():
        counts[hit] = counts.get(hit, 0) + 1
    return ServerLevelStatus(
        available=bool(answers),
        error=before.error if before.error else None,
        mode=_first([s.mode for s in answers]),
        cache_type=_first([s.cache_type for s in answers]),
        block_size=_first([s.block_size for s in answers]),
        blocks_total=_first([s.blocks_total for s in answers]),
        blocks_used_before=before.blocks_used,
        blocks_used_peak=_peak([s.blocks_used for s in answers]),
        num_running_peak=_peak([s.num_running for s in answers]),
        num_waiting_peak=_peak([s.num_waiting for s in answers]),
        hit_rate_before=before.hit_rate,
        hit_rate_after=after.hit_rate,
        polls=len(answers),
        hit_types=dict(sorted(counts.items())),
    )


class StatusMonitor:
    """Reads /v1/status before a block of work, polls it during, and reads it after.

    Use as ``async with StatusMonitor(...) as monitor:``, then ``monitor.result``.
    Polling runs as a background task on the caller's event loop; it stops at
    exit. When the first read fails (no such endpoint), it does not poll.
    """

    def __init__(self, client: httpx.AsyncClient, url: str, interval_s: float) -> None:
        self._client = client
        self._url = url
        self._interval_s = interval_s
        self._before = StatusSnapshot(error="not read yet")
        self._samples: list[StatusSnapshot] = []
        self._task: asyncio.Task[None] | None = None
        self.result: ServerLevelStatus | None = None  # set when the block exits

    async def __aenter__(self) -> StatusMonitor:
        self._before = await fetch_status(self._client, self._url)
        if self._before.ok:
            self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        after = await fetch_status(self._client, self._url) if self._before.ok else self._before
        self.result = summarize_status(self._before, self._samples, after)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._samples.append(await fetch_status(self._client, self._url))
