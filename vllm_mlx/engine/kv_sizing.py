"""From the cache configuration to a sized KV cache manager."""

from __future__ import annotations

import logging

from vllm_mlx.backend.memory import system_memory
from vllm_mlx.config import CacheConfig, CacheStrategy
from vllm_mlx.engine.kv.manager import KVCacheManager

log = logging.getLogger(__name__)

_MIN_BLOCKS = 16
# memory-aware: the pool takes at most this share of currently available memory,
# and unreferenced cached blocks at most this share of the pool.
_AVAILABLE_SHARE = 0.5
_CACHED_SHARE = 0.5


def pool_budget_bytes(cfg: CacheConfig) -> int:
    total, available = system_memory()
    budget = cfg.memory_mb * 2**20 if cfg.memory_mb else int(total * cfg.memory_percent)
    if cfg.strategy in (CacheStrategy.AUTO, CacheStrategy.MEMORY_AWARE):
        budget = min(budget, int(available * _AVAILABLE_SHARE))
    return budget


def build_cache_manager(cfg: CacheConfig, bytes_per_token: int) -> KVCacheManager:
    """Size the block pool from the memory budget and apply the strategy."""
    block_bytes = bytes_per_token * cfg.block_size
    num_blocks = max(_MIN_BLOCKS, pool_budget_bytes(cfg) // block_bytes)
    strategy = cfg.strategy
    max_cached = None
    if strategy in (CacheStrategy.AUTO, CacheStrategy.MEMORY_AWARE):
        max_cached = int(num_blocks * _CACHED_SHARE)
    log.info(
        "KV pool budget %.0f MiB: %d blocks x %d tokens (%d KiB per token)",
        num_blocks * block_bytes / 2**20,
        num_blocks,
        cfg.block_size,
        bytes_per_token // 1024,
    )
    return KVCacheManager(
        num_blocks,
        cfg.block_size,
        retain_last_only=strategy is CacheStrategy.LEGACY,
        max_cached_free=max_cached,
    )
