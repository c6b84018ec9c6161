"""/v1/status parsing and per-level folding, tolerant of other servers."""

from __future__ import annotations

from typing import Any

import pytest

from vllm_mlx.bench.status import StatusSnapshot, parse_status, status_url, summarize_status

FULL: dict[str, Any] = {
    "num_running": 2,
    "num_waiting": 1,
    "cache": {"type": "paged_cache", "hit_rate": 0.25, "block_size": 16, "blocks_total": 512,
              "blocks_used": 40},
    "runtime": {"mode": "batched"},
    "requests": [{"request_id": "a", "cache_hit_type": "prefix"}, {"request_id": "b"}],
}  # fmt: skip


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:8000/v1", "http://h:8000/v1/status"),
        ("http://h:8000/v1/", "http://h:8000/v1/status"),
        ("https://h/proxy/v1", "https://h/proxy/v1/status"),
        ("http://h:8000", "http://h:8000/v1/status"),
    ],
)
def test_status_url_is_root_plus_v1_status(base: str, url: str) -> None:
    assert status_url(base) == url


def test_parse_full_status() -> None:
    snap = parse_status(FULL)
    assert snap.ok and snap.mode == "batched" and snap.cache_type == "paged_cache"
    assert (snap.hit_rate, snap.block_size, snap.blocks_total, snap.blocks_used) == (
        0.25, 16, 512, 40,
    )  # fmt: skip
    assert (snap.num_running, snap.num_waiting) == (2, 1)
    assert snap.hit_types == (("a", "prefix"),)


def test_missing_or_odd_fields_are_absent_not_errors() -> None:
    snap = parse_status({"cache": {"hit_rate": 1, "blocks_used": "many"}, "runtime": [],
                         "num_running": True, "requests": "none"})  # fmt: skip
    assert snap.ok and snap.hit_rate == 1.0  # an int rate is a float
    assert snap.blocks_used is None and snap.mode is None and snap.num_running is None
    assert snap.hit_types == ()
    assert parse_status({}) == StatusSnapshot()
    assert not parse_status([1, 2]).ok


def test_summary_keeps_peaks_and_before_after_rates() -> None:
    before = parse_status({**FULL, "num_running": 0, "cache": {**FULL["cache"], "blocks_used": 3}})
    polls = [parse_status(FULL), StatusSnapshot(error="HTTP 503"), parse_status({"cache": {}})]
    after = parse_status({**FULL, "cache": {**FULL["cache"], "hit_rate": 0.5, "blocks_used": 0}})
    summary = summarize_status(before, polls, after)
    assert summary.available and summary.error is None and summary.polls == 4
    assert (summary.blocks_used_before, summary.blocks_used_peak, summary.num_running_peak) == (
        3, 40, 2,
    )  # fmt: skip
    assert (summary.hit_rate_before, summary.hit_rate_after) == (0.25, 0.5)
    assert (summary.mode, summary.block_size, summary.blocks_total) == ("batched", 16, 512)
    assert summary.hit_types == {"prefix": 1}  # request "a", counted once over every poll


def test_summary_of_an_absent_endpoint() -> None:
    missing = StatusSnapshot(error="HTTP 404")
    summary = summarize_status(missing, [], missing)
    assert not summary.available and summary.error == "HTTP 404" and summary.polls == 0
    assert summary.blocks_used_peak is None and summary.mode is None
