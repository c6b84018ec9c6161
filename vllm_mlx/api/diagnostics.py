"""The additive ``diagnostics`` object of a response, one per request.

Asked for with ``include_diagnostics: true`` (level ``basic``) or any
``diagnostics_level`` (``basic`` | ``deep``) on chat and text completions and
``/v1/messages``. Observability signals, not quality scores::

    {
      "level": "deep",
      "max_context_tokens": 2048,              # the model's window
      "effective_context_tokens": 1024,        # the window enforced
      "effective_context_source": "operator_override",  # or "model_config"
      "context_utilization_pct": 1.171875,     # prompt_tokens / effective * 100, unrounded
      "prompt_tokens": 12,
      "cached_tokens": 0,
      "generated_tokens": 8,
      "cache_hit_type": "miss",                # exact, supersequence, prefix, lcp or miss
      "visual_inputs": 0,                      # image parts of the request
      "memory": {...},                         # only when max_tokens was cut under pressure
      "runtime": {                             # deep only: the state the request ran in
        "mode": "batched",
        "deterministic": false,
        "memory": {"pressure": "normal", "action": "warn", "action_in_force": false, ...},
        "batch_divergence": {"status": "disabled", "agreement": null, ...},
        "repetition": {"policy": "safe", "override_accepted": null},
        "scheduler": {"running_at_admission": 0, "waiting_at_admission": 0},
        "preempted": false
      }
    }

With several sequences (``n`` > 1, several prompts) the numbers are the request's:
prompt and cached tokens as ``usage`` counts them (once per prompt), generated
tokens summed; the hit type and the queue at admission are the first sequence's,
and ``preempted`` is true when any sequence was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.generation import request_usage
from vllm_mlx.api.trust import RepetitionDecision
from vllm_mlx.engine.types import Finished, SequenceFacts

DiagnosticsLevel = Literal["basic", "deep"]


def requested_level(include: bool, level: DiagnosticsLevel | None) -> DiagnosticsLevel | None:
    """Any ``diagnostics_level`` asks for that level; ``include_diagnostics`` alone for basic."""
    if level is not None:
        return level
    return "basic" if include else None


@dataclass(frozen=True)
class DiagnosticsRequest:
    """What a request asked of diagnostics, and what was decided before it ran."""

    level: DiagnosticsLevel | None  # None: not asked for
    max_tokens_factor: float = 1.0  # < 1: max_tokens was cut under memory pressure
    repetition: RepetitionDecision | None = None  # the loop detector's; None: the server's
    prompt_count: int = 1  # prompts of the request (text completions may send several)
    visual_inputs: int = 0  # image parts of the request

    @property
    def wanted(self) -> bool:
        """Asked for, or owed: a cut max_tokens is never silent."""
        return self.level is not None or self.max_tokens_factor < 1.0


def diagnostics_body(
    ctx: ServingContext, asked: DiagnosticsRequest, finished: Sequence[Finished]
) -> dict[str, Any]:
    """The object of the module docstring, from the request's final events (choice order)."""
    level = asked.level or "basic"
    usage = request_usage([f.usage for f in finished], asked.prompt_count)
    facts = finished[0].facts if finished else SequenceFacts()
    effective = ctx.context_length
    override = ctx.engine_config.effective_context_tokens
    source = "operator_override" if override and override < ctx.model_context_length else None
    body: dict[str, Any] = {
        "level": level,
        "max_context_tokens": ctx.model_context_length,
        "effective_context_tokens": effective,
        "effective_context_source": source or "model_config",
        "context_utilization_pct": usage.prompt_tokens / effective * 100,
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "generated_tokens": usage.completion_tokens,
        "cache_hit_type": facts.cache_hit_type,
        "visual_inputs": asked.visual_inputs,
    }
    if asked.max_tokens_factor < 1.0 and ctx.memory is not None:
        body["memory"] = {**ctx.memory.summary(), "max_tokens_factor": asked.max_tokens_factor}
    if level == "deep":
        body["runtime"] = _runtime(ctx, asked, facts, any(f.facts.preempted for f in finished))
    return body


DiagnosticsFn = Callable[[Sequence[Finished]], dict[str, Any]]  # final events → the object


def diagnostics_fn(ctx: ServingContext, asked: DiagnosticsRequest) -> DiagnosticsFn | None:
    """The request's diagnostics builder; None when it gets none."""
    if not asked.wanted:
        return None
    return lambda finished: diagnostics_body(ctx, asked, finished)


def _runtime(
    ctx: ServingContext, asked: DiagnosticsRequest, facts: SequenceFacts, preempted: bool
) -> dict[str, Any]:
    """The deep snapshot: the server's state now, and the engine's facts of the request."""
    repetition = asked.repetition or RepetitionDecision(ctx.policy.repetition_policy)
    return {
        "mode": ctx.engine.stats().mode,
        "deterministic": ctx.policy.deterministic,
        "memory": ctx.memory.summary() if ctx.memory is not None else None,
        "batch_divergence": divergence_summary(ctx),
        "repetition": {
            "policy": repetition.mode.value,
            "override_accepted": repetition.override_accepted,
        },
        "scheduler": {
            "running_at_admission": facts.running_at_admission,
            "waiting_at_admission": facts.waiting_at_admission,
        },
        "preempted": preempted,
    }


def divergence_summary(ctx: ServingContext) -> dict[str, object]:
    """The batch-divergence monitor's summary, or the same shape saying it does not run."""
    if ctx.divergence is not None:
        return ctx.divergence.summary()
    config = ctx.policy.divergence
    return {
        "enabled": False,
        "status": "disabled",
        "agreement": None,
        "last_probe_at": None,
        "probes_run": 0,
        "probes_failed": 0,
        "threshold": config.threshold,
        "action": config.action.value,
        "serializing": False,
        "interval_s": config.interval_s,
    }
