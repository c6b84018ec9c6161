"""Runtime mode policy: how many sequences may run at once, step by step."""

from __future__ import annotations

from vllm_mlx.config import EngineConfig, RuntimeMode


class RuntimeModeController:
    """simple = one sequence at a time; batched = up to max_num_seqs; auto switches.

    Switching only changes admission, so no running request is dropped or restarted.
    """

    def __init__(self, config: EngineConfig) -> None:
        self._mode = config.runtime_mode
        self._threshold = max(1, config.runtime_mode_threshold)
        self._batch = max(1, config.max_num_seqs)

    def max_running(self, in_flight: int) -> int:
        if self._mode is RuntimeMode.SIMPLE:
            return 1
        if self._mode is RuntimeMode.BATCHED or in_flight >= self._threshold:
            return self._batch
        return 1

    def mode_name(self, max_running: int) -> str:
        return "batched" if max_running > 1 else "simple"
