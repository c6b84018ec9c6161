"""Memory pressure: periodic readings, their level, and what the server does about it.

A reading is the larger of MLX's device memory (active + cache) and the process
RSS, as a share of system memory: on CPU and unified-memory Macs MLX's buffers
are part of the process, so adding the two would count them twice.

Levels rise as soon as a reading crosses a threshold and fall only once it is
``HYSTERESIS_PCT`` points (at most a tenth of the threshold) below it, so a
reading hovering at a threshold does not flap. Running requests are never
touched: the actions only apply to new ones.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from vllm_mlx.api.errors import APIError, ErrorType
from vllm_mlx.config import MemoryAction, MemoryConfig

log = logging.getLogger(__name__)

HYSTERESIS_PCT = 2.0  # points below a threshold before its level is left
TREND_PCT = 0.5  # change between readings that counts as rising or falling


class Pressure(StrEnum):
    NORMAL = "normal"
    ELEVATED = "elevated"  # at or above the warn threshold
    CRITICAL = "critical"  # at or above the limit: the memory action applies


@dataclass(frozen=True)
class MemoryUsage:
    """Raw figures of one reading, in bytes."""

    device_bytes: int  # MLX active + cache memory
    rss_bytes: int  # resident set of the server process
    total_bytes: int  # system memory

    @property
    def used_pct(self) -> float:
        used = max(self.device_bytes, self.rss_bytes)
        return 100.0 * used / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class MemoryReading:
    usage: MemoryUsage
    used_pct: float
    pressure: Pressure
    trend: str  # rising, falling or steady against the previous reading
    at: float  # time.time() of the reading


class MemoryMonitor:
    """Classifies readings and answers the questions the request path asks."""

    def __init__(self, config: MemoryConfig, source: Callable[[], MemoryUsage]) -> None:
        self.config = config
        self._source = source
        self._reading: MemoryReading | None = None
        self.transitions = 0  # pressure level changes seen

    def reading(self) -> MemoryReading | None:
        return self._reading

    @property
    def pressure(self) -> Pressure:
        return self._reading.pressure if self._reading else Pressure.NORMAL

    def sample(self) -> MemoryReading:
        """Take a reading from the source now."""
        return self.observe(self._source())

    def observe(self, usage: MemoryUsage) -> MemoryReading:
        """Classify one reading; log when the level changes."""
        previous = self._reading
        pct = usage.used_pct
        level = self._level(pct, previous.pressure if previous else Pressure.NORMAL)
        trend = "steady"
        if previous is not None and abs(pct - previous.used_pct) >= TREND_PCT:
            trend = "rising" if pct > previous.used_pct else "falling"
        reading = MemoryReading(usage, round(pct, 2), level, trend, time.time())
        self._reading = reading
        before = previous.pressure if previous else Pressure.NORMAL
        if level is not before:
            self.transitions += 1
            self._log_transition(before, reading)
        return reading

    def _level(self, pct: float, current: Pressure) -> Pressure:
        warn, limit = self.config.warn_pct, self.config.limit_pct
        if pct >= limit:
            return Pressure.CRITICAL
        if current is Pressure.CRITICAL and pct > limit - _margin(limit):
            return Pressure.CRITICAL
        if pct >= warn:
            return Pressure.ELEVATED
        if current is not Pressure.NORMAL and pct > warn - _margin(warn):
            return Pressure.ELEVATED
        return Pressure.NORMAL

    def _log_transition(self, before: Pressure, reading: MemoryReading) -> None:
        where = (
            f"{reading.used_pct:.1f}% of system memory (warn {self.config.warn_pct:g}%, "
            f"limit {self.config.limit_pct:g}%)"
        )
        if reading.pressure is Pressure.CRITICAL:
            log.warning(
                "memory pressure critical: %s; --memory-action %s: %s",
                where,
                self.config.action.value,
                _ACTION_TEXT[self.config.action],
            )
        elif reading.pressure is Pressure.ELEVATED:
            log.warning("memory pressure elevated: %s", where)
        else:
            log.info("memory pressure back to normal: %s (was %s)", where, before.value)

    # -- what the request path asks ----------------------------------------------

    def max_tokens_factor(self) -> float:
        """0.5 while critical under reduce-context, else 1."""
        critical = self.pressure is Pressure.CRITICAL
        return 0.5 if critical and self.config.action is MemoryAction.REDUCE_CONTEXT else 1.0

    def refusal(self) -> APIError | None:
        """The 503 for a new inference request while critical under reject-new."""
        reading = self._reading
        if (
            reading is None
            or reading.pressure is not Pressure.CRITICAL
            or self.config.action is not MemoryAction.REJECT_NEW
        ):
            return None
        return APIError(
            f"The server is under memory pressure ({reading.used_pct:.1f}% of system memory, "
            f"limit {self.config.limit_pct:g}%) and refuses new requests until it falls; "
            "retry later.",
            ErrorType.OVERLOADED,
            code="memory_pressure",
            retry_after_s=max(1, math.ceil(self.config.interval_s)),
        )

    def summary(self) -> dict[str, object]:
        """The state for /v1/status, diagnostics and capabilities."""
        reading = self._reading
        return {
            "pressure": self.pressure.value,
            "used_percent": reading.used_pct if reading else None,
            "trend": reading.trend if reading else None,
            "device_bytes": reading.usage.device_bytes if reading else None,
            "rss_bytes": reading.usage.rss_bytes if reading else None,
            "total_bytes": reading.usage.total_bytes if reading else None,
            "warn_threshold_percent": self.config.warn_pct,
            "limit_threshold_percent": self.config.limit_pct,
            "action": self.config.action.value,
            "action_in_force": self.pressure is Pressure.CRITICAL,
            "interval_s": self.config.interval_s,
        }

    async def run(self) -> None:
        """Read every interval until cancelled; a failing source is logged, not fatal."""
        while True:
            try:
                self.sample()
            except Exception:  # a broken reading must not end monitoring
                log.exception("memory reading failed")
            await asyncio.sleep(self.config.interval_s)


def _margin(threshold: float) -> float:
    return min(HYSTERESIS_PCT, threshold / 10)


_ACTION_TEXT = {
    MemoryAction.WARN: "serving on",
    MemoryAction.REDUCE_CONTEXT: "max_tokens of new requests is halved",
    MemoryAction.REJECT_NEW: "new inference requests get 503",
}


def process_usage(device_bytes: Callable[[], int]) -> Callable[[], MemoryUsage]:
    """A source reading the process's RSS and system memory with psutil."""
    import psutil

    process = psutil.Process()
    total = psutil.virtual_memory().total

    def read() -> MemoryUsage:
        return MemoryUsage(device_bytes(), process.memory_info().rss, total)

    return read
