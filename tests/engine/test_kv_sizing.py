"""build_cache_manager: pool size from the memory budget, strategy to retention."""

from __future__ import annotations

import logging

import pytest

from vllm_mlx.config import CacheConfig, CacheStrategy
from vllm_mlx.engine import kv_sizing
from vllm_mlx.engine.kv_sizing import build_cache_manager, pool_budget_bytes

MiB = 2**20
GiB = 2**30
BPT = 4096  # bytes of KV per token
BLOCK = 16 * BPT  # bytes per 16-token block


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """System memory seen by kv_sizing; tests change ``total`` and ``available``."""
    mem = {"total": 64 * GiB, "available": 32 * GiB}
    monkeypatch.setattr(kv_sizing, "system_memory", lambda: (mem["total"], mem["available"]))
    return mem


def test_blocks_come_from_memory_mb(memory: dict[str, int]) -> None:
    kv = build_cache_manager(CacheConfig(strategy=CacheStrategy.PAGED, memory_mb=64), BPT)
    assert kv.pool.num_blocks == 64 * MiB // BLOCK == 1024
    assert kv.block_size == kv.pool.block_size == 16
    assert kv.pool.num_free == 1024


def test_block_size_changes_the_block_count(memory: dict[str, int]) -> None:
    cfg = CacheConfig(strategy=CacheStrategy.PAGED, memory_mb=64, block_size=64)
    kv = build_cache_manager(cfg, BPT)
    assert kv.block_size == 64
    assert kv.pool.num_blocks == 64 * MiB // (64 * BPT) == 256


def test_partial_blocks_are_rounded_down(memory: dict[str, int]) -> None:
    kv = build_cache_manager(CacheConfig(strategy=CacheStrategy.PAGED, memory_mb=1), 3000)
    assert kv.pool.num_blocks == MiB // (16 * 3000)  # 21, not 22


def test_without_memory_mb_a_share_of_ram_is_used(memory: dict[str, int]) -> None:
    memory["total"] = 8 * GiB
    cfg = CacheConfig(strategy=CacheStrategy.PAGED, memory_percent=0.25)
    assert pool_budget_bytes(cfg) == 2 * GiB
    assert build_cache_manager(cfg, BPT).pool.num_blocks == 2 * GiB // BLOCK


@pytest.mark.parametrize("strategy", [CacheStrategy.AUTO, CacheStrategy.MEMORY_AWARE])
def test_memory_aware_caps_the_budget_at_half_of_available(
    memory: dict[str, int], strategy: CacheStrategy
) -> None:
    memory["available"] = 64 * MiB
    kv = build_cache_manager(CacheConfig(strategy=strategy, memory_mb=256), BPT)
    assert kv.pool.num_blocks == 32 * MiB // BLOCK == 512


@pytest.mark.parametrize("strategy", [CacheStrategy.AUTO, CacheStrategy.MEMORY_AWARE])
def test_memory_aware_caps_cached_blocks_at_half_the_pool(
    memory: dict[str, int], strategy: CacheStrategy
) -> None:
    kv = build_cache_manager(CacheConfig(strategy=strategy, memory_mb=64), BPT)
    assert kv.pool.num_blocks == 1024  # plenty available: memory_mb decides
    assert kv.max_cached_free == 512
    assert not kv.retain_last_only


@pytest.mark.parametrize("strategy", [CacheStrategy.PAGED, CacheStrategy.LEGACY])
def test_other_strategies_ignore_available_memory(
    memory: dict[str, int], strategy: CacheStrategy
) -> None:
    memory["available"] = 64 * MiB
    kv = build_cache_manager(CacheConfig(strategy=strategy, memory_mb=256), BPT)
    assert kv.pool.num_blocks == 256 * MiB // BLOCK


def test_paged_keeps_every_cached_block(memory: dict[str, int]) -> None:
    kv = build_cache_manager(CacheConfig(strategy=CacheStrategy.PAGED, memory_mb=64), BPT)
    assert kv.max_cached_free is None
    assert not kv.retain_last_only


def test_legacy_keeps_only_the_last_request(memory: dict[str, int]) -> None:
    kv = build_cache_manager(CacheConfig(strategy=CacheStrategy.LEGACY, memory_mb=64), BPT)
    assert kv.retain_last_only
    assert kv.max_cached_free is None


@pytest.mark.parametrize("strategy", list(CacheStrategy))
def test_tiny_budgets_still_get_the_minimum_pool(
    memory: dict[str, int], strategy: CacheStrategy
) -> None:
    memory["available"] = 1024
    kv = build_cache_manager(CacheConfig(strategy=strategy, memory_mb=1), 10 * MiB)
    assert kv.pool.num_blocks == 16
    if strategy in (CacheStrategy.AUTO, CacheStrategy.MEMORY_AWARE):
        assert kv.max_cached_free == 8


def test_default_config_is_memory_aware(memory: dict[str, int]) -> None:
    kv = build_cache_manager(CacheConfig(), BPT)
    expected = min(int(64 * GiB * 0.20), 16 * GiB) // BLOCK
    assert kv.pool.num_blocks == expected
    assert kv.max_cached_free == expected // 2


def test_the_pool_size_is_logged(memory: dict[str, int], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vllm_mlx.engine.kv_sizing"):
        build_cache_manager(CacheConfig(strategy=CacheStrategy.PAGED, memory_mb=64), BPT)
    assert "1024 blocks x 16 tokens" in caplog.text


def test_real_system_memory_gives_a_usable_pool() -> None:
    kv = build_cache_manager(CacheConfig(memory_mb=8), BPT)
    assert 16 <= kv.pool.num_blocks <= 8 * MiB // BLOCK
