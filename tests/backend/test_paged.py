"""Paged forward passes agree with mlx-lm's own contiguous cache, whatever the block layout."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.models.cache import make_prompt_cache

from vllm_mlx.backend.loader import load_model
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.paged import build_layout
from vllm_mlx.backend.runner import ModelRunner
from vllm_mlx.config import ModelConfig

BLOCK = 4
TOL = 1e-4


@pytest.fixture(scope="module")
def loaded(tiny_llama_path: Path) -> LoadedModel:
    return load_model(ModelConfig(model=str(tiny_llama_path)))


def _reference_logits(loaded: LoadedModel, prompt: list[int], steps: list[int]) -> list[mx.array]:
    """Last-position logits after the prompt, then after each decoded token."""
    cache = make_prompt_cache(loaded.model)
    out = [loaded.model(mx.array([prompt]), cache=cache)[0, -1]]
    for token in steps:
        out.append(loaded.model(mx.array([[token]]), cache=cache)[0, -1])
    mx.eval(out)
    return out


def _paged_logits(
    runner: ModelRunner, prompt: list[int], steps: list[int], table: list[int], chunk: int
) -> list[mx.array]:
    """The same through the runner: chunked prefill, then one decode per token."""
    runner.ensure_blocks(max(table) + 1)
    for start in range(0, len(prompt) - 1, chunk):
        runner.prefill(prompt[start : min(start + chunk, len(prompt) - 1)], table, start)
    out = [runner.decode([prompt[-1]], [table], [len(prompt) - 1])[0]]
    for i, token in enumerate(steps):
        out.append(runner.decode([token], [table], [len(prompt) + i])[0])
        mx.eval(out[-1], runner.storage.state())
    return out


def _assert_close(got: list[mx.array], want: list[mx.array]) -> None:
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        err = mx.max(mx.abs(g - w)).item()
        assert err < TOL, f"step {step}: max |paged - reference| = {err}"


@pytest.mark.parametrize(
    ("table", "chunk"),
    [
        (list(range(1, 8)), 64),  # consecutive blocks: slice writes, strided view reads
        (list(range(1, 8)), 3),  # chunks that straddle block edges
        ([5, 2, 9, 1, 7, 3, 11], 64),  # scattered blocks: gather path
        ([1, 2, 3, 9, 10, 11, 12], 5),  # consecutive runs broken once
    ],
)
def test_single_row_matches_contiguous_cache(
    loaded: LoadedModel, table: list[int], chunk: int
) -> None:
    prompt = [(7 * i) % 50 + 3 for i in range(13)]
    steps = [11, 4, 29, 8, 17, 5, 23, 14, 9, 31, 2, 6, 12]
    runner = ModelRunner(loaded, BLOCK)
    _assert_close(
        _paged_logits(runner, prompt, steps, table, chunk),
        _reference_logits(loaded, prompt, steps),
    )


def test_batched_rows_match_their_own_contiguous_caches(loaded: LoadedModel) -> None:
    prompts = [[(5 * i) % 40 + 3 for i in range(9)], [(3 * i) % 30 + 7 for i in range(14)]]
    tables = [[4, 1, 6], [2, 3, 5, 7, 8]]
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(16)
    for prompt, table in zip(prompts, tables, strict=True):
        runner.prefill(prompt[:-1], table, 0)
    logits = runner.decode([p[-1] for p in prompts], tables, [len(p) - 1 for p in prompts])
    for row, prompt in enumerate(prompts):
        want = _reference_logits(loaded, prompt, [])[0]
        _assert_close([logits[row]], [want])


def test_copy_block_duplicates_a_prefix(loaded: LoadedModel) -> None:
    """A sequence continuing from a copied partial block sees the original's keys."""
    prompt = [(7 * i) % 50 + 3 for i in range(7)]  # one full block + 3 tokens
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(8)
    runner.prefill(prompt[:-1], [1, 2], 0)
    runner.copy_block(2, 5, 2)
    got = runner.decode([prompt[-1]], [[1, 5]], [len(prompt) - 1])
    mx.eval(got)
    want = _reference_logits(loaded, prompt, [])[0]
    # Block 5 holds positions 4-5 only; position 6 is written by this decode.
    _assert_close([got[0]], [want])


def test_layout_fast_paths() -> None:
    consecutive = build_layout([[3, 4, 5]], [9], 1, BLOCK)
    assert (consecutive.write_start, consecutive.read_start, consecutive.kv_len) == (21, 12, 10)
    scattered = build_layout([[3, 8, 5]], [9], 1, BLOCK)
    assert (scattered.write_start, scattered.read_start) == (21, None)
    straddling = build_layout([[3, 8, 5]], [7], 2, BLOCK)  # positions 7, 8 in blocks 8, 5
    assert straddling.write_start is None
    batched = build_layout([[3, 4], [5]], [5, 2], 1, BLOCK)
    assert (batched.write_start, batched.read_start, batched.kv_len) == (None, None, None)


def test_batched_prefill_with_padding_matches_separate_caches(loaded: LoadedModel) -> None:
    """Chunks of several rows in one padded forward: padding never reaches a real block."""
    from vllm_mlx.backend.runner import PrefillSpan, _padding_groups

    prompts = [
        [(5 * i) % 40 + 3 for i in range(14)],
        [(3 * i) % 30 + 7 for i in range(12)],
        [(7 * i) % 20 + 5 for i in range(17)],
    ]
    tables = [[4, 1, 6, 9], [2, 3, 5, 7], [8, 10, 11, 12, 13]]
    runner = ModelRunner(loaded, BLOCK)
    runner.ensure_blocks(14)
    # Row 2 has had its first chunk already: its second starts at position 5.
    runner.prefill(prompts[2][:5], tables[2], 0)
    spans = [
        PrefillSpan(prompts[0][:-1], tables[0], 0),
        PrefillSpan(prompts[1][:-1], tables[1], 0),
        PrefillSpan(prompts[2][5:-1], tables[2], 5),
    ]
    assert [len(g) for g in _padding_groups(spans)] == [3]  # one padded forward
    runner.prefill_batch(spans)
    logits = runner.decode(
        [p[-1] for p in prompts], tables, [len(p) - 1 for p in prompts], ["a", "b", "c"]
    )
    for row, prompt in enumerate(prompts):
        want = _reference_logits(loaded, prompt, [])[0]
        err = mx.max(mx.abs(logits[row] - want)).item()
        assert err < TOL, f"row {row}: {err}"
    # Every real slot of unused block 0 stays untouched (padding went to scratch).
    assert all(mx.all(k[:, :, :BLOCK] == 0).item() for k in runner.storage.keys if k is not None)
