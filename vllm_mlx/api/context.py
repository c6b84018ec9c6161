"""What every route needs: the engine, the tokenizer and the frozen policy."""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import Request

from vllm_mlx.api.constraints import ConstraintBuilder
from vllm_mlx.api.errors import APIError, ErrorType, InvalidRequest, ModelNotFound
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.backend.vision import VisionPrompter
from vllm_mlx.config import AgentConfig, EngineConfig, PolicyConfig
from vllm_mlx.engine.client import EngineClient

DEFAULT_MODEL_ALIAS = "default"

log = logging.getLogger(__name__)


@dataclass
class Notices:
    """Operator notices logged once per server, not once per request."""

    seen: set[str] = field(default_factory=set)

    def warn_once(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            log.warning(message)


@dataclass
class OverrideCounters:
    """repetition_policy_override outcomes since start (api/trust.py counts them)."""

    accepted: int = 0  # honoured: the request was trusted
    denied: int = 0  # ignored: the request was not trusted


class PressureView(Protocol):
    """What requests ask of the memory monitor (server/monitors/memory.py)."""

    def max_tokens_factor(self) -> float: ...  # 0.5 while reduce-context is in force

    def summary(self) -> dict[str, object]: ...


class DivergenceView(Protocol):
    """What deep diagnostics read of the batch-divergence monitor (server/monitors)."""

    def summary(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class ServingContext:
    engine: EngineClient
    tokenizer: Tokenizer
    model_id: str  # the loaded model's id, as /v1/models lists it
    model_context_length: int  # positions the model supports
    engine_config: EngineConfig
    policy: PolicyConfig
    agent: AgentConfig = field(default_factory=AgentConfig)
    constraints: ConstraintBuilder | None = None  # None: structured output unavailable
    started_at: float = field(default_factory=time.time)
    notices: Notices = field(default_factory=Notices, compare=False)
    bind_host: str = ""  # ServerConfig.host; "" (unknown) is never loopback
    repetition_overrides: OverrideCounters = field(default_factory=OverrideCounters, compare=False)
    memory: PressureView | None = None  # None: no monitor (in-process tests)
    divergence: DivergenceView | None = None  # None: --batch-divergence-monitor is off
    longest_token_chars: int | None = None  # the vocabulary's; None: no check before tokenizing
    model_sampling: SamplingDefaults = field(default_factory=SamplingDefaults)  # the model's
    vision: VisionPrompter | None = None  # chats with images → token ids; None: text-only model

    @property
    def context_length(self) -> int:
        """The enforced window: the model's, or the operator's smaller override."""
        override = self.engine_config.effective_context_tokens
        return min(override, self.model_context_length) if override else self.model_context_length

    @property
    def model_names(self) -> list[str]:
        return [self.model_id, DEFAULT_MODEL_ALIAS]

    def check_model(self, name: str) -> None:
        if self.policy.strict_model_id and name not in self.model_names:
            raise ModelNotFound(name, self.model_names)

    def deadline(self) -> float:
        return time.monotonic() + self.policy.timeout_s

    def check_text_fits(self, text: str, param: str = "messages") -> None:
        """Refuse, before tokenizing it, a text that cannot fit the window.

        No token covers more than ``longest_token_chars`` characters, so the text has at
        least ``len(text) / longest_token_chars`` tokens: a 30 MB message is refused at
        once instead of after seconds of tokenizing.
        """
        if not self.longest_token_chars:
            return
        at_least = math.ceil(len(text) / self.longest_token_chars)
        if at_least >= self.context_length:
            raise InvalidRequest(
                f"This model's maximum context length is {self.context_length} tokens, "
                f"but the prompt has at least {at_least} tokens.",
                param=param,
                code="context_length_exceeded",
            )

    def max_tokens_factor(self) -> float:
        """Read once per request: 0.5 while memory is critical under reduce-context."""
        return self.memory.max_tokens_factor() if self.memory is not None else 1.0

    def resolve_max_tokens(
        self,
        requested: int | None,
        prompt_tokens: int,
        ceiling: int | None = None,
        factor: float = 1.0,
    ) -> int:
        """An explicit max_tokens must fit the window; the default is clamped to it.

        ``ceiling`` replaces the server default as the clamped budget; ``factor`` (from
        :meth:`max_tokens_factor`) scales the result under memory pressure, logged.
        """
        budget = self._fit_max_tokens(requested, prompt_tokens, ceiling)
        if factor >= 1.0:
            return budget
        reduced = max(1, int(budget * factor))
        log.info(
            "max_tokens %d -> %d: memory pressure is critical (--memory-action reduce-context)",
            budget,
            reduced,
        )
        return reduced

    def _fit_max_tokens(
        self, requested: int | None, prompt_tokens: int, ceiling: int | None
    ) -> int:
        room = self.context_length - prompt_tokens
        if room <= 0:
            raise InvalidRequest(
                f"This model's maximum context length is {self.context_length} tokens, "
                f"but the prompt has {prompt_tokens} tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        if requested is None:
            return min(ceiling or self.engine_config.default_max_tokens, room)
        if requested > room:
            raise InvalidRequest(
                f"This model's maximum context length is {self.context_length} tokens. "
                f"You requested {prompt_tokens + requested} tokens ({prompt_tokens} in the "
                f"prompt, {requested} for the completion). Reduce the prompt or max_tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def serving(request: Request) -> ServingContext:
    """The app's serving context, or a 503 while the model loads."""
    ctx: ServingContext | None = getattr(request.app.state, "serving", None)
    if ctx is None:
        raise APIError("the model is still loading", ErrorType.OVERLOADED)
    return ctx


def request_id_of(request: Request) -> str:
    """The id the request-id middleware assigned (the caller's x-request-id if sent)."""
    return str(getattr(request.state, "request_id", "")) or uuid.uuid4().hex


def require_constraints(ctx: ServingContext, param: str) -> ConstraintBuilder:
    if ctx.constraints is None:
        raise InvalidRequest("structured output is not available on this server", param=param)
    return ctx.constraints
