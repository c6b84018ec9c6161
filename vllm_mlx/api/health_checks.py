"""The checks behind ``GET /health/diagnostics``, each a small function of plain inputs.

Every check returns a :class:`CheckResult`; :func:`overall_status` folds them into
``healthy`` (all pass), ``degraded`` (some warn) or ``unhealthy`` (some fail).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol

from vllm_mlx import __version__
from vllm_mlx.backend.facts import ModelFacts
from vllm_mlx.backend.tokenizer import TemplateError, Tokenizer
from vllm_mlx.config import RepetitionPolicy

KNOWN_ISSUES = resources.files("vllm_mlx").joinpath("data/known_issues.json")
VERSIONED_PACKAGES = ("mlx", "mlx-lm")  # read from the installed distributions
HALF = ("float16", "bfloat16")
PROBE_REPLY = "diagnostics probe reply"  # the assistant turn rendered to find its end token


class CheckStatus(StrEnum):
    PASS = "pass"
    WARNING = "warning"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    detail: str  # one human sentence: what was compared and what was found
    metadata: dict[str, Any] = field(default_factory=dict)  # the compared values

    def body(self) -> dict[str, Any]:
        return {"status": self.status.value, "detail": self.detail, "metadata": self.metadata}


def overall_status(results: Iterable[CheckResult]) -> str:
    statuses = {r.status for r in results}
    if CheckStatus.FAIL in statuses:
        return "unhealthy"
    return "degraded" if CheckStatus.WARNING in statuses else "healthy"


def _verdict(problems: list[str], ok: str, metadata: dict[str, Any]) -> CheckResult:
    if problems:
        return CheckResult(CheckStatus.WARNING, "; ".join(problems), metadata)
    return CheckResult(CheckStatus.PASS, ok, metadata)


def check_dtype(facts: ModelFacts) -> CheckResult:
    """The dtype the weights run in against the checkpoint's dtype and the device.

    Warns on a lossy float conversion (float16 on a bfloat16 checkpoint can overflow,
    half precision on a float32 one loses precision) and on half precision on CPU,
    where MLX's own kernels are much slower than float32 through BLAS. Quantized
    weights are the operator's choice and pass.
    """
    loaded, trained, device = facts.loaded_dtype, facts.trained_dtype, facts.device
    metadata = {"loaded": loaded, "trained": trained, "device": device}
    problems = []
    if loaded == "float16" and trained == "bfloat16":
        problems.append(
            "float16 on a bfloat16-trained model: activations beyond 65504 overflow "
            "(use --dtype bfloat16 or float32)"
        )
    elif loaded in HALF and trained in ("float32", *HALF) and loaded != trained:
        problems.append(f"{loaded} on a {trained} checkpoint loses precision")
    if loaded in HALF and device == "cpu":
        problems.append(
            f"{loaded} on CPU runs on MLX's slow CPU kernels; float32 uses BLAS (--dtype float32)"
        )
    ok = f"{loaded} on {device}; checkpoint dtype {trained or 'not stated'}"
    return _verdict(problems, ok, metadata)


def template_end_id(tokenizer: Tokenizer) -> int | None:
    """The first special token the chat template writes after an assistant reply.

    Raises :class:`TemplateError` when the template cannot render a plain exchange.
    None: no chat template, or no special token closes the turn.
    """
    if not tokenizer.has_chat_template:
        return None
    tokenizer.render_chat([{"role": "user", "content": "ping"}])  # the request path
    exchange = [
        {"role": "user", "content": "ping"},
        {"role": "assistant", "content": PROBE_REPLY},
    ]
    text = tokenizer.render_chat(exchange, add_generation_prompt=False)
    _, found, tail = text.partition(PROBE_REPLY)
    if not found:
        return None
    specials = set(tokenizer.special_tokens)
    for token_id in tokenizer.encode(tail, add_special_tokens=False):
        if tokenizer.decode([token_id], skip_special_tokens=False) in specials:
            return token_id
    return None


def check_eos(facts: ModelFacts, tokenizer: Tokenizer) -> CheckResult:
    """The tokenizer's EOS, generation_config's EOS ids and the template's end of turn agree.

    Fails when the chat template does not render (every chat request would fail);
    warns when generation_config omits the tokenizer's EOS, when the template closes
    a turn with a token the engine does not stop on, or when there is no template.
    """
    tok_eos, gen_eos = facts.tokenizer_eos_id, facts.generation_eos_ids
    stop_ids = sorted(tokenizer.eos_token_ids)
    metadata: dict[str, Any] = {
        "tokenizer": tok_eos,
        "generation_config": None if gen_eos is None else list(gen_eos),
        "chat_template": None,
        "stop_ids": stop_ids,
    }
    try:
        end_id = template_end_id(tokenizer)
    except TemplateError as exc:
        return CheckResult(CheckStatus.FAIL, f"the chat template does not render: {exc}", metadata)
    metadata["chat_template"] = end_id
    problems = []
    if not tokenizer.has_chat_template:
        problems.append("no chat template: chat requests are rendered as a plain transcript")
    if tok_eos is None and not gen_eos:
        problems.append("neither the tokenizer nor generation_config names an EOS id")
    if tok_eos is not None and gen_eos is not None and tok_eos not in gen_eos:
        problems.append(
            f"tokenizer EOS {_named(tokenizer, tok_eos)} is not among generation_config's "
            f"eos_token_id [{', '.join(_named(tokenizer, i) for i in gen_eos)}]"
        )
    if end_id is not None and end_id not in tokenizer.eos_token_ids:
        problems.append(
            f"the chat template ends a turn with {_named(tokenizer, end_id)}, which is not an "
            "EOS id: generation runs past the end of the turn"
        )
    ok = f"tokenizer, generation_config and chat template agree (stop ids {stop_ids})"
    return _verdict(problems, ok, metadata)


def _named(tokenizer: Tokenizer, token_id: int) -> str:
    return f"{token_id} ({tokenizer.decode([token_id], skip_special_tokens=False)})"


def check_memory(summary: Mapping[str, object] | None) -> CheckResult:
    """The memory monitor's pressure: elevated warns, critical fails (its action is in force)."""
    if summary is None:
        return CheckResult(CheckStatus.PASS, "no memory monitor in this process")
    pressure, used = summary.get("pressure"), summary.get("used_percent")
    metadata = {"pressure": pressure, "used_percent": used}
    if pressure == "critical":
        detail = (
            f"memory use {used}% is at or above the limit threshold "
            f"{summary.get('limit_threshold_percent')}%: --memory-action "
            f"{summary.get('action')} is in force"
        )
        return CheckResult(CheckStatus.FAIL, detail, metadata)
    if pressure == "elevated":
        detail = (
            f"memory use {used}% is at or above the warn threshold "
            f"{summary.get('warn_threshold_percent')}%"
        )
        return CheckResult(CheckStatus.WARNING, detail, metadata)
    return CheckResult(CheckStatus.PASS, f"memory pressure {pressure} ({used}% used)", metadata)


def installed_versions() -> dict[str, str | None]:
    """Versions of mlx, mlx-lm and vllm-mlx (None: the distribution is not installed)."""
    versions: dict[str, str | None] = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["vllm-mlx"] = __version__
    return versions


def check_versions(
    versions: Mapping[str, str | None], facts: ModelFacts, known_issues: Path | None = None
) -> CheckResult:
    """Installed versions against the known bad version/architecture pairs.

    ``known_issues`` is a JSON file like ``vllm_mlx/data/known_issues.json`` (the default).
    """
    meta: dict[str, Any] = {"versions": dict(versions), "known_issues": []}
    source = KNOWN_ISSUES if known_issues is None else known_issues
    try:
        issues = json.loads(source.read_text(encoding="utf-8"))["issues"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return CheckResult(CheckStatus.WARNING, f"cannot read the known-issues list: {exc}", meta)
    model_names = {facts.model_type, *facts.architectures} - {None}
    matched = [
        issue
        for issue in issues
        if versions.get(issue["package"]) in issue["versions"]
        and (not issue["architectures"] or model_names & set(issue["architectures"]))
    ]
    meta["known_issues"] = matched
    problems = [f"{i['package']} {versions[i['package']]}: {i['detail']}" for i in matched]
    listed = ", ".join(f"{name} {version}" for name, version in versions.items())
    return _verdict(problems, f"no known issue for {listed}", meta)


class DivergenceView(Protocol):
    """What diagnostics read from the batch-divergence monitor (server/monitors/divergence.py)."""

    def summary(self) -> Mapping[str, object]: ...


def check_batch_invariance(monitor: DivergenceView | None) -> CheckResult:
    """The batch-divergence monitor's verdict; no monitor passes."""
    if monitor is None:
        return CheckResult(CheckStatus.PASS, "monitor disabled (--batch-divergence-monitor)")
    summary = dict(monitor.summary())
    state, agreement = summary.get("status"), summary.get("agreement")
    if state == "warning":
        detail = f"batched output diverges from single-sequence output (agreement {agreement})"
        return CheckResult(CheckStatus.WARNING, detail, summary)
    details = {
        "pass": f"batched output matches single-sequence output (agreement {agreement})",
        "disabled": "monitor disabled: the runtime mode never batches",
        "pending": "no probe has finished yet",
    }
    if state in details:
        return CheckResult(CheckStatus.PASS, details[str(state)], summary)
    return CheckResult(CheckStatus.WARNING, f"unknown monitor status {state!r}", summary)


def check_repetition(policy: RepetitionPolicy) -> CheckResult:
    """``off`` warns: a sequence that loops then runs until max_tokens."""
    metadata = {"mode": policy.value}
    if policy is RepetitionPolicy.OFF:
        detail = "repetition detector off: a looping sequence runs until max_tokens"
        return CheckResult(CheckStatus.WARNING, detail, metadata)
    return CheckResult(CheckStatus.PASS, f"repetition detector on ({policy.value})", metadata)
