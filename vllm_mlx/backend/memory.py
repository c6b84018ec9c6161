"""MLX memory figures and the device MLX runs on (Metal, CUDA or CPU)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class MemorySnapshot:
    active_bytes: int  # memory held by live arrays
    peak_bytes: int  # high-water mark since start
    cache_bytes: int  # freed buffers MLX keeps for reuse


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "gpu" or "cpu"
    backend: str  # "metal", "cuda" or "cpu"
    name: str  # what MLX calls the device


def memory_snapshot() -> MemorySnapshot:
    return MemorySnapshot(mx.get_active_memory(), mx.get_peak_memory(), mx.get_cache_memory())


def device_info() -> DeviceInfo:
    kind = "gpu" if mx.default_device().type == mx.gpu else "cpu"
    if kind == "cpu":
        backend = "cpu"
    elif mx.metal.is_available():
        backend = "metal"
    else:
        backend = "cuda"
    name = (
        str(mx.device_info().get("device_name", backend)) if hasattr(mx, "device_info") else backend
    )
    return DeviceInfo(kind, backend, name)


def system_memory() -> tuple[int, int]:
    """(total, available) bytes of system RAM; available falls back to total."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = total
    if sys.platform.startswith("linux"):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    return total, available
