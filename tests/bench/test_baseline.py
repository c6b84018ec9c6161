"""The mlx-lm direct baseline on a tiny random model (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.tiny_models import build_tiny_model
from vllm_mlx.bench.baseline import DirectGenerator, load_baseline_model, run_baseline
from vllm_mlx.bench.config import BASELINE_LABEL, BenchConfig


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


def test_eos_mask_forbids_eos_tokens() -> None:
    import mlx.core as mx

    from vllm_mlx.backend.reference import _mask_tokens

    logits = mx.array([[0.0, 5.0, 1.0, 4.0]])
    masked = _mask_tokens([1, 99])(mx.array([0]), logits)  # 99 is outside the vocab: skipped
    assert int(mx.argmax(masked, axis=-1).item()) == 3
    assert masked[0, 1].item() == float("-inf")


def test_prompt_ids_match_the_server_template_path(tiny_model: Path) -> None:
    cfg = BenchConfig(baseline=True, baseline_model=str(tiny_model))
    generator = DirectGenerator.create(load_baseline_model(cfg), cfg)
    hf = generator.loaded.tokenizer
    text = hf.apply_chat_template(
        [{"role": "user", "content": "hello there"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert generator.encode("hello there") == hf.encode(text, add_special_tokens=False)


def test_baseline_reports_a_full_length_level(tiny_model: Path) -> None:
    cfg = BenchConfig(
        baseline=True, baseline_model=str(tiny_model), num_prompts=2, prompt_tokens=12,
        max_tokens=6, warmup=1, progress=False,
    )  # fmt: skip
    stats = run_baseline(cfg)
    assert (stats.label, stats.concurrency, stats.requests, stats.failures) == (
        BASELINE_LABEL, 1, 2, 0,
    )  # fmt: skip
    assert stats.output_tokens == 2 * 6  # EOS is masked, so every request runs to max_tokens
    assert stats.mean_prompt_tokens is not None and stats.mean_prompt_tokens > 12
    assert stats.itl_basis == "token"
    assert stats.ttft_ms_p50 is not None and stats.itl_ms_p50 is not None
    assert stats.decode_tok_s_p50 is not None and stats.decode_tok_s_p50 > 0
