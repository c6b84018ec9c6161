"""The one place a protocol request becomes engine requests.

Adapters state what the request asked in a :class:`RequestSpec` (None: omitted).
:func:`generation_requests` fills every gap the same way for every protocol::

    request field → --default-temperature / --default-top-p → the model's
    generation_config.json → the protocol's default

and adds the token budget (fitted to the context window), the deadline, the
logits processors and the loop detector's mode. Under ``--deterministic`` every
request samples greedily (temperature 0, top_p 1, no top_k / min_p), whatever it sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.generation import PreparedPrompt
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.config import RepetitionPolicy
from vllm_mlx.engine.types import GenerationRequest, SamplingParams


@dataclass(frozen=True, kw_only=True)
class RequestSpec:
    """What one protocol request asks of the engine, before any default applies."""

    protocol_defaults: SamplingDefaults  # the protocol's own values: the last fallback
    n: int = 1  # sequences per prompt
    numbered_ids: bool = True  # sequence ids "<id>-<i>"; False: the request id as is (n == 1)
    max_tokens: int | None = None  # None: the server's default, clamped to the window
    max_tokens_is_ceiling: bool = False  # clamp max_tokens to the window instead of a 400
    temperature: float | None = None  # None: omitted, a default applies
    top_p: float | None = None  # None: omitted, a default applies
    top_k: int | None = None  # None: omitted, a default applies; 0 disables
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias), ids already checked
    seed: int | None = None  # sequence i samples with seed + i
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    top_logprobs: int | None = None  # alternatives per position; None: logprobs off
    repetition: RepetitionPolicy | None = None  # the loop detector's mode; None: the server's


def server_defaults(ctx: ServingContext) -> SamplingDefaults:
    """The operator's flags, else the model's values; None: the protocol's default applies."""
    engine = ctx.engine_config
    flags = SamplingDefaults(temperature=engine.default_temperature, top_p=engine.default_top_p)
    return flags.or_else(ctx.model_sampling)


def sampling_defaults(ctx: ServingContext, protocol: SamplingDefaults) -> SamplingDefaults:
    """The operator's flags, else the model's values, else the protocol's."""
    return server_defaults(ctx).or_else(protocol)


def generation_requests(
    ctx: ServingContext,
    request_id: str,
    prepared: PreparedPrompt,
    spec: RequestSpec,
    max_tokens_factor: float = 1.0,
) -> list[GenerationRequest]:
    """``spec.n`` sequences per prompt, sharing one deadline and arrival time.

    ``max_tokens_factor`` (ServingContext.max_tokens_factor, read once per request)
    shrinks the budget under memory pressure.
    """
    defaults = sampling_defaults(ctx, spec.protocol_defaults)
    mode = spec.repetition or ctx.policy.repetition_policy
    deadline, now = ctx.deadline(), time.monotonic()
    out = []
    for p_index, prompt in enumerate(prepared.prompts):
        if spec.max_tokens_is_ceiling:
            max_tokens = ctx.resolve_max_tokens(
                None, len(prompt), ceiling=spec.max_tokens, factor=max_tokens_factor
            )
        else:
            max_tokens = ctx.resolve_max_tokens(
                spec.max_tokens, len(prompt), factor=max_tokens_factor
            )
        for choice in range(spec.n):
            index = p_index * spec.n + choice
            out.append(
                GenerationRequest(
                    request_id=f"{request_id}-{index}" if spec.numbered_ids else request_id,
                    prompt_token_ids=tuple(prompt),
                    sampling=_sampling(spec, defaults, max_tokens, index, ctx.policy.deterministic),
                    deadline=deadline,
                    logits_processors=prepared.logits_processors,
                    arrival_time=now,
                    skip_special_tokens=prepared.skip_special_tokens,
                    repetition_policy=mode,
                    images=prepared.images,
                )
            )
    return out


def _sampling(
    spec: RequestSpec, defaults: SamplingDefaults, max_tokens: int, index: int, greedy: bool
) -> SamplingParams:
    temperature = spec.temperature if spec.temperature is not None else defaults.temperature
    top_p = spec.top_p if spec.top_p is not None else defaults.top_p
    top_k = spec.top_k if spec.top_k is not None else defaults.top_k
    if greedy:
        temperature, top_p, top_k = 0.0, 1.0, 0
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,  # a protocol left it unset
        top_p=1.0 if top_p is None else top_p,
        top_k=max(0, top_k or 0),
        min_p=0.0 if greedy else spec.min_p,
        repetition_penalty=spec.repetition_penalty,
        presence_penalty=spec.presence_penalty,
        frequency_penalty=spec.frequency_penalty,
        logit_bias=spec.logit_bias,
        seed=None if spec.seed is None else spec.seed + index,
        stop=spec.stop,
        ignore_eos=spec.ignore_eos,
        logprobs=spec.top_logprobs is not None,
        top_logprobs=spec.top_logprobs or 0,
    )
