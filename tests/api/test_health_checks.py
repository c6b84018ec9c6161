"""Each /health/diagnostics check on plain inputs: its pass, warning and fail paths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny_models import BOS, IM_END
from vllm_mlx.api import health_checks as checks
from vllm_mlx.api.health_checks import CheckResult, CheckStatus
from vllm_mlx.backend.facts import ModelFacts, generation_eos_ids
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.config import RepetitionPolicy

PASS, WARNING, FAIL = CheckStatus.PASS, CheckStatus.WARNING, CheckStatus.FAIL
EOS_ID, BOS_ID = 2, 0  # the tiny tokenizer's <|im_end|> and <|endoftext|>

FACTS = ModelFacts(
    loaded_dtype="float32",
    trained_dtype="float32",
    device="cpu",
    model_type="llama",
    architectures=("LlamaForCausalLM",),
    tokenizer_eos_id=EOS_ID,
    generation_eos_ids=(EOS_ID, BOS_ID),
)


def tiny_tokenizer(
    path: Path, stop_ids: frozenset[int] = frozenset({EOS_ID, BOS_ID}), template: Any = ...
) -> Tokenizer:
    """The tiny model's tokenizer as the server loads it; ``template`` replaces ChatML."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    wrapper = load_tokenizer(path)
    if template is not ...:
        wrapper._tokenizer.chat_template = template
    return Tokenizer(wrapper, stop_ids)


def test_tiny_token_ids(tiny_llama_path: Path) -> None:
    tokenizer = tiny_tokenizer(tiny_llama_path)
    assert tokenizer.decode([EOS_ID], skip_special_tokens=False) == IM_END
    assert tokenizer.decode([BOS_ID], skip_special_tokens=False) == BOS


@pytest.mark.parametrize(
    ("loaded", "trained", "device", "status", "says"),
    [
        ("float32", "float32", "cpu", PASS, "float32 on cpu"),
        ("float32", "bfloat16", "cpu", PASS, "checkpoint dtype bfloat16"),
        ("bfloat16", "bfloat16", "gpu", PASS, "bfloat16 on gpu"),
        ("quantized(4-bit)", "bfloat16", "gpu", PASS, "quantized(4-bit) on gpu"),
        ("float16", None, "gpu", PASS, "not stated"),
        ("float16", "bfloat16", "gpu", WARNING, "overflow"),
        ("float16", "float32", "gpu", WARNING, "loses precision"),
        ("bfloat16", "float16", "gpu", WARNING, "loses precision"),
        ("bfloat16", "bfloat16", "cpu", WARNING, "slow CPU kernels"),
    ],
)
def test_dtype(
    loaded: str, trained: str | None, device: str, status: CheckStatus, says: str
) -> None:
    facts = replace(FACTS, loaded_dtype=loaded, trained_dtype=trained, device=device)
    result = checks.check_dtype(facts)
    assert result.status is status and says in result.detail
    assert result.metadata == {"loaded": loaded, "trained": trained, "device": device}


def test_eos_agree(tiny_llama_path: Path) -> None:
    result = checks.check_eos(FACTS, tiny_tokenizer(tiny_llama_path))
    assert result.status is PASS, result.detail
    assert result.metadata == {
        "tokenizer": EOS_ID,
        "generation_config": [EOS_ID, BOS_ID],
        "chat_template": EOS_ID,  # ChatML closes a turn with <|im_end|>
        "stop_ids": [BOS_ID, EOS_ID],
    }


def test_eos_generation_config_disagrees(tiny_llama_path: Path) -> None:
    facts = replace(FACTS, generation_eos_ids=(BOS_ID,))
    result = checks.check_eos(facts, tiny_tokenizer(tiny_llama_path))
    assert result.status is WARNING
    assert result.detail == (
        "tokenizer EOS 2 (<|im_end|>) is not among generation_config's eos_token_id "
        "[0 (<|endoftext|>)]"
    )


def test_eos_no_generation_config_passes(tiny_llama_path: Path) -> None:
    facts = replace(FACTS, generation_eos_ids=None)
    assert checks.check_eos(facts, tiny_tokenizer(tiny_llama_path)).status is PASS


def test_eos_template_ends_turn_with_a_token_that_does_not_stop(tiny_llama_path: Path) -> None:
    tokenizer = tiny_tokenizer(tiny_llama_path, stop_ids=frozenset({BOS_ID}))
    facts = replace(FACTS, tokenizer_eos_id=BOS_ID, generation_eos_ids=(BOS_ID,))
    result = checks.check_eos(facts, tokenizer)
    assert result.status is WARNING
    assert "ends a turn with 2 (<|im_end|>), which is not an EOS id" in result.detail


def test_eos_template_that_does_not_render_fails(tiny_llama_path: Path) -> None:
    template = "{{ raise_exception('this template is broken') }}"
    result = checks.check_eos(FACTS, tiny_tokenizer(tiny_llama_path, template=template))
    assert result.status is FAIL and "does not render" in result.detail
    assert "this template is broken" in result.detail


def test_eos_no_template_warns(tiny_llama_path: Path) -> None:
    result = checks.check_eos(FACTS, tiny_tokenizer(tiny_llama_path, template=None))
    assert result.status is WARNING and "no chat template" in result.detail
    assert result.metadata["chat_template"] is None


def test_eos_none_at_all_warns(tiny_llama_path: Path) -> None:
    facts = replace(FACTS, tokenizer_eos_id=None, generation_eos_ids=None)
    result = checks.check_eos(facts, tiny_tokenizer(tiny_llama_path))
    assert result.status is WARNING and "names an EOS id" in result.detail


def memory_summary(pressure: str) -> dict[str, object]:
    return {
        "pressure": pressure,
        "used_percent": 42.0,
        "warn_threshold_percent": 40.0,
        "limit_threshold_percent": 50.0,
        "action": "reject-new",
    }


@pytest.mark.parametrize(
    ("pressure", "status", "says"),
    [
        ("normal", PASS, "memory pressure normal (42.0% used)"),
        ("elevated", WARNING, "at or above the warn threshold 40.0%"),
        ("critical", FAIL, "--memory-action reject-new is in force"),
    ],
)
def test_memory(pressure: str, status: CheckStatus, says: str) -> None:
    result = checks.check_memory(memory_summary(pressure))
    assert result.status is status and says in result.detail
    assert result.metadata == {"pressure": pressure, "used_percent": 42.0}


def test_memory_without_a_monitor_passes() -> None:
    assert checks.check_memory(None).status is PASS


def test_the_shipped_known_issues_pass_the_pinned_versions() -> None:
    versions = checks.installed_versions()
    assert set(versions) == {"mlx", "mlx-lm", "vllm-mlx"}
    result = checks.check_versions(versions, FACTS)
    assert result.status is PASS, result.detail
    assert result.metadata == {"versions": versions, "known_issues": []}


def write_issues(tmp_path: Path, *issues: dict[str, Any]) -> Path:
    path = tmp_path / "known_issues.json"
    path.write_text(json.dumps({"issues": list(issues)}))
    return path


BAD_QWEN = {
    "package": "mlx-lm",
    "versions": ["9.9.9"],
    "architectures": ["qwen2"],
    "detail": "qwen2 decodes garbage",
}
BAD_ANY = {"package": "mlx", "versions": ["9.9.8"], "architectures": [], "detail": "slow"}


def test_version_with_a_known_bad_pair_warns(tmp_path: Path) -> None:
    issues = write_issues(tmp_path, BAD_QWEN, BAD_ANY)
    versions = {"mlx": "9.9.8", "mlx-lm": "9.9.9", "vllm-mlx": "0.1.0"}
    qwen = replace(FACTS, model_type="qwen2", architectures=("Qwen2ForCausalLM",))
    result = checks.check_versions(versions, qwen, issues)
    assert result.status is WARNING
    assert result.detail == "mlx-lm 9.9.9: qwen2 decodes garbage; mlx 9.9.8: slow"
    assert result.metadata["known_issues"] == [BAD_QWEN, BAD_ANY]
    # The same versions on another architecture meet only the issue for every model.
    result = checks.check_versions(versions, FACTS, issues)
    assert result.status is WARNING and result.detail == "mlx 9.9.8: slow"


def test_version_matches_architectures_by_class_name_too(tmp_path: Path) -> None:
    issues = write_issues(tmp_path, {**BAD_QWEN, "architectures": ["LlamaForCausalLM"]})
    versions = {"mlx": "1", "mlx-lm": "9.9.9", "vllm-mlx": "0.1.0"}
    assert checks.check_versions(versions, FACTS, issues).status is WARNING
    versions["mlx-lm"] = "9.9.10"
    assert checks.check_versions(versions, FACTS, issues).status is PASS


def test_version_with_an_unreadable_list_warns(tmp_path: Path) -> None:
    path = tmp_path / "known_issues.json"
    path.write_text("{not json")
    result = checks.check_versions({"mlx": "1"}, FACTS, path)
    assert result.status is WARNING and "cannot read the known-issues list" in result.detail


class Monitor:
    def __init__(self, status: str, agreement: float | None) -> None:
        self.body = {"status": status, "agreement": agreement}

    def summary(self) -> dict[str, Any]:
        return self.body


@pytest.mark.parametrize(
    ("monitor", "status", "says"),
    [
        (None, PASS, "monitor disabled (--batch-divergence-monitor)"),
        (Monitor("disabled", None), PASS, "monitor disabled: the runtime mode never batches"),
        (Monitor("pending", None), PASS, "no probe has finished yet"),
        (Monitor("pass", 1.0), PASS, "matches single-sequence output (agreement 1.0)"),
        (Monitor("warning", 0.75), WARNING, "diverges from single-sequence output"),
        (Monitor("confused", None), WARNING, "unknown monitor status 'confused'"),
    ],
)
def test_batch_invariance(monitor: Monitor | None, status: CheckStatus, says: str) -> None:
    result = checks.check_batch_invariance(monitor)
    assert result.status is status and says in result.detail
    assert result.metadata == ({} if monitor is None else monitor.body)


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        (RepetitionPolicy.SAFE, PASS),
        (RepetitionPolicy.STRICT, PASS),
        (RepetitionPolicy.OFF, WARNING),
    ],
)
def test_repetition_policy(policy: RepetitionPolicy, status: CheckStatus) -> None:
    result = checks.check_repetition(policy)
    assert result.status is status and result.metadata == {"mode": policy.value}


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        ([], "healthy"),
        ([PASS, PASS], "healthy"),
        ([PASS, WARNING], "degraded"),
        ([WARNING, FAIL, PASS], "unhealthy"),
    ],
)
def test_overall_status(statuses: list[CheckStatus], overall: str) -> None:
    assert checks.overall_status(CheckResult(s, "") for s in statuses) == overall


def test_check_body() -> None:
    body = CheckResult(WARNING, "why", {"k": 1}).body()
    assert body == {"status": "warning", "detail": "why", "metadata": {"k": 1}}


@pytest.mark.parametrize(
    ("written", "read"),
    [(None, None), ({}, None), ({"eos_token_id": 7}, (7,)), ({"eos_token_id": [7, 8]}, (7, 8))],
)
def test_generation_eos_ids(tmp_path: Path, written: Any, read: tuple[int, ...] | None) -> None:
    if written is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(written))
    assert generation_eos_ids(tmp_path) == read
