"""The per-request diagnostics object (api/diagnostics.py), built without a model."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.diagnostics import (
    DiagnosticsRequest,
    diagnostics_body,
    diagnostics_fn,
    divergence_summary,
    requested_level,
)
from vllm_mlx.api.trust import RepetitionDecision
from vllm_mlx.config import EngineConfig, PolicyConfig, RepetitionPolicy
from vllm_mlx.engine.types import Finished, FinishReason, SequenceFacts, Usage

BASIC_FIELDS = {
    "level",
    "max_context_tokens",
    "effective_context_tokens",
    "effective_context_source",
    "context_utilization_pct",
    "prompt_tokens",
    "cached_tokens",
    "generated_tokens",
    "cache_hit_type",
    "visual_inputs",
}


class FakeMemory:
    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def max_tokens_factor(self) -> float:
        return self.factor

    def summary(self) -> dict[str, object]:
        return {"pressure": "critical", "action": "reduce-context", "action_in_force": True}


def _ctx(window: int = 2048, override: int | None = None, **fields: Any) -> ServingContext:
    engine = SimpleNamespace(stats=lambda: SimpleNamespace(mode="batched"))
    return ServingContext(
        engine=engine,  # type: ignore[arg-type]
        tokenizer=None,  # type: ignore[arg-type]
        model_id="tiny",
        model_context_length=window,
        engine_config=EngineConfig(effective_context_tokens=override),
        policy=fields.pop("policy", PolicyConfig()),
        **fields,
    )


def _done(prompt: int, generated: int, cached: int = 0, **facts: Any) -> Finished:
    return Finished(
        FinishReason.STOP, Usage(prompt, generated, cached), facts=SequenceFacts(**facts)
    )


@pytest.mark.parametrize(
    ("include", "level", "expected"),
    [
        (False, None, None),
        (True, None, "basic"),
        (True, "deep", "deep"),
        (False, "basic", "basic"),  # any level asks, include_diagnostics or not
        (False, "deep", "deep"),
    ],
)
def test_requested_level(include: bool, level: Any, expected: str | None) -> None:
    assert requested_level(include, level) == expected


def test_basic_body_from_the_model_window() -> None:
    asked = DiagnosticsRequest("basic")
    body = diagnostics_body(_ctx(), asked, [_done(12, 5, 8, cache_hit_type="prefix")])
    assert body == {
        "level": "basic",
        "max_context_tokens": 2048,
        "effective_context_tokens": 2048,
        "effective_context_source": "model_config",
        "context_utilization_pct": 12 / 2048 * 100,
        "prompt_tokens": 12,
        "cached_tokens": 8,
        "generated_tokens": 5,
        "cache_hit_type": "prefix",
        "visual_inputs": 0,
    }


def test_an_operator_override_is_the_effective_window() -> None:
    body = diagnostics_body(_ctx(override=1024), DiagnosticsRequest("basic"), [_done(300, 1)])
    assert (body["max_context_tokens"], body["effective_context_tokens"]) == (2048, 1024)
    assert body["effective_context_source"] == "operator_override"
    assert body["context_utilization_pct"] == 300 / 1024 * 100 == 29.296875


def test_an_override_above_the_model_window_changes_nothing() -> None:
    body = diagnostics_body(_ctx(override=4096), DiagnosticsRequest("basic"), [_done(3, 1)])
    assert body["effective_context_tokens"] == 2048
    assert body["effective_context_source"] == "model_config"


def test_several_sequences_report_the_request_totals() -> None:
    # Two prompts (10 and 20 tokens), n=2: prompt and cached tokens once per prompt.
    finished = [
        _done(10, 3, 4, cache_hit_type="lcp", running_at_admission=1, waiting_at_admission=2),
        _done(10, 5, 10, cache_hit_type="exact"),
        _done(20, 7, 0, preempted=True),
        _done(20, 1, 0),
    ]
    body = diagnostics_body(_ctx(), DiagnosticsRequest("deep", prompt_count=2), finished)
    assert (body["prompt_tokens"], body["cached_tokens"], body["generated_tokens"]) == (30, 4, 16)
    assert body["context_utilization_pct"] == 30 / 2048 * 100
    assert body["cache_hit_type"] == "lcp"  # the first sequence's
    runtime = body["runtime"]
    assert runtime["scheduler"] == {"running_at_admission": 1, "waiting_at_admission": 2}
    assert runtime["preempted"] is True  # any sequence's


def test_deep_adds_the_runtime_snapshot() -> None:
    asked = DiagnosticsRequest("deep", repetition=RepetitionDecision(RepetitionPolicy.STRICT, True))
    policy = PolicyConfig(deterministic=True)
    body = diagnostics_body(_ctx(policy=policy, memory=FakeMemory()), asked, [_done(4, 2)])
    assert set(body) == BASIC_FIELDS | {"runtime"}
    assert body["runtime"] == {
        "mode": "batched",
        "deterministic": True,
        "memory": FakeMemory().summary(),
        "batch_divergence": divergence_summary(_ctx()),
        "repetition": {"policy": "strict", "override_accepted": True},
        "scheduler": {"running_at_admission": 0, "waiting_at_admission": 0},
        "preempted": False,
    }
    assert body["runtime"]["batch_divergence"]["status"] == "disabled"


def test_deep_without_an_override_reports_the_server_policy() -> None:
    ctx = _ctx(policy=PolicyConfig(repetition_policy=RepetitionPolicy.OFF))
    body = diagnostics_body(ctx, DiagnosticsRequest("deep"), [_done(4, 2)])
    assert body["runtime"]["repetition"] == {"policy": "off", "override_accepted": None}
    assert body["runtime"]["memory"] is None  # no monitor


def test_a_refused_override_says_so() -> None:
    decision = RepetitionDecision(RepetitionPolicy.SAFE, override_accepted=False)
    body = diagnostics_body(_ctx(), DiagnosticsRequest("deep", repetition=decision), [_done(4, 2)])
    assert body["runtime"]["repetition"] == {"policy": "safe", "override_accepted": False}


def test_basic_has_no_runtime() -> None:
    body = diagnostics_body(_ctx(), DiagnosticsRequest("basic"), [_done(4, 2)])
    assert set(body) == BASIC_FIELDS


def test_a_cut_max_tokens_adds_the_memory_block_even_unasked() -> None:
    asked = DiagnosticsRequest(None, max_tokens_factor=0.5)
    assert asked.wanted
    body = diagnostics_body(_ctx(memory=FakeMemory(0.5)), asked, [_done(4, 2)])
    assert body["level"] == "basic"
    assert body["memory"] == {**FakeMemory().summary(), "max_tokens_factor": 0.5}


def test_no_builder_when_nothing_is_asked() -> None:
    assert diagnostics_fn(_ctx(), DiagnosticsRequest(None)) is None
    build = diagnostics_fn(_ctx(), DiagnosticsRequest("basic"))
    assert build is not None and build([_done(4, 2)])["prompt_tokens"] == 4
