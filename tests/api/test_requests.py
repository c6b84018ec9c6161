"""api/requests.py: one builder of GenerationRequests for every protocol."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.generation import PreparedPrompt
from vllm_mlx.api.requests import (
    RequestSpec,
    generation_requests,
    sampling_defaults,
    server_defaults,
)
from vllm_mlx.api.system import capabilities_body
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.config import EngineConfig, PolicyConfig, RepetitionPolicy

PROTOCOL = SamplingDefaults(temperature=1.0, top_p=1.0, top_k=0)
MODEL = SamplingDefaults(temperature=0.2, top_p=0.9)


def make_ctx(sampling: SamplingDefaults | None = None, **engine: Any) -> ServingContext:
    return ServingContext(
        engine=None,  # type: ignore[arg-type]  # the builder never touches the engine
        tokenizer=None,  # type: ignore[arg-type]
        model_id="tiny",
        model_context_length=100,
        engine_config=EngineConfig(**engine),
        policy=PolicyConfig(repetition_policy=RepetitionPolicy.STRICT),
        model_sampling=sampling or SamplingDefaults(),
    )


def test_defaults_stack_flags_then_model_then_protocol() -> None:
    assert sampling_defaults(make_ctx(), PROTOCOL) == PROTOCOL
    assert sampling_defaults(make_ctx(MODEL), PROTOCOL) == SamplingDefaults(0.2, 0.9, 0)
    flags = make_ctx(MODEL, default_temperature=0.7)
    assert sampling_defaults(flags, PROTOCOL) == SamplingDefaults(0.7, 0.9, 0)
    assert server_defaults(flags) == SamplingDefaults(0.7, 0.9, None)  # None: the protocol's


def test_capabilities_report_the_defaults_in_force() -> None:
    defaults = capabilities_body(make_ctx(MODEL, default_top_p=0.5), {})["defaults"]
    assert (defaults["temperature"], defaults["top_p"], defaults["top_k"]) == (0.2, 0.5, None)
    defaults = capabilities_body(make_ctx(), {})["defaults"]
    assert (defaults["temperature"], defaults["top_p"]) == (None, None)


def test_one_request_carries_everything_the_engine_needs() -> None:
    def factory() -> Any:
        return None

    prepared = PreparedPrompt([[1, 2, 3]], (factory,), skip_special_tokens=False)
    spec = RequestSpec(protocol_defaults=PROTOCOL, numbered_ids=False, max_tokens=10, seed=4)
    (request,) = generation_requests(make_ctx(MODEL), "abc", prepared, spec)
    assert request.request_id == "abc"
    assert request.prompt_token_ids == (1, 2, 3)
    assert request.logits_processors == (factory,)
    assert request.skip_special_tokens is False
    assert request.repetition_policy is RepetitionPolicy.STRICT  # the server's mode
    assert request.deadline is not None and request.arrival_time > 0
    s = request.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.seed) == (10, 0.2, 0.9, 0, 4)


def test_sequences_are_numbered_and_seeded_in_order() -> None:
    spec = RequestSpec(protocol_defaults=PROTOCOL, n=2, seed=10)
    requests = generation_requests(make_ctx(), "r", PreparedPrompt([[1], [2]]), spec)
    assert [r.request_id for r in requests] == ["r-0", "r-1", "r-2", "r-3"]
    assert [r.sampling.seed for r in requests] == [10, 11, 12, 13]


def test_max_tokens_refused_or_fitted() -> None:
    prepared = PreparedPrompt([[1] * 40])
    spec = RequestSpec(protocol_defaults=PROTOCOL, max_tokens=70)
    with pytest.raises(InvalidRequest, match="maximum context length is 100 tokens"):
        generation_requests(make_ctx(), "r", prepared, spec)
    ceiling = RequestSpec(protocol_defaults=PROTOCOL, max_tokens=70, max_tokens_is_ceiling=True)
    (request,) = generation_requests(make_ctx(), "r", prepared, ceiling)
    assert request.sampling.max_tokens == 60
    (request,) = generation_requests(make_ctx(), "r", prepared, ceiling, max_tokens_factor=0.5)
    assert request.sampling.max_tokens == 30


def test_deterministic_samples_greedily_whatever_the_request_sends() -> None:
    ctx = replace(make_ctx(MODEL), policy=PolicyConfig(deterministic=True))
    spec = RequestSpec(
        protocol_defaults=PROTOCOL, max_tokens=5, temperature=1.0, top_p=0.5, top_k=7, min_p=0.1
    )
    (request,) = generation_requests(ctx, "d", PreparedPrompt([[1]]), spec)
    s = request.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p) == (0.0, 1.0, 0, 0.0)
    assert s.greedy
