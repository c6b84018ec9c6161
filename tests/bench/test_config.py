"""CLI options → BenchConfig, and its validation."""

from __future__ import annotations

import argparse

import pytest

from vllm_mlx.bench import add_bench_arguments, run_bench
from vllm_mlx.bench.config import BenchConfig, parse_concurrency
from vllm_mlx.config import DType


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm-mlx bench")
    add_bench_arguments(parser)
    return parser


def test_parse_concurrency() -> None:
    assert parse_concurrency("1,2,4,8") == (1, 2, 4, 8)
    assert parse_concurrency(" 4, 1,4 ,") == (4, 1)
    for bad in ("", "0", "1,x", "-2"):
        with pytest.raises(ValueError):
            parse_concurrency(bad)


def test_defaults_match_the_config_defaults() -> None:
    args = _parser().parse_args([])
    defaults = BenchConfig()
    for name in vars(defaults):
        assert getattr(args, name) == getattr(defaults, name), name


def test_every_option_is_parsed_into_its_field() -> None:
    argv = (
        "--base-url http://h:1/v1 --model m --api-key k --timeout 5 --concurrency 2,6 "
        "--num-prompts 9 --prompt-tokens 33 --max-tokens 7 --temperature 0.5 --warmup 1 "
        "--seed 4 --json out.jsonl --no-progress --compare-baseline --baseline-model x.gguf "
        "--dtype float16 --status-interval 0.2"
    )
    args = _parser().parse_args(argv.split())
    assert args.concurrency == (2, 6) and args.json_path == "out.jsonl"
    assert args.status_interval == 0.2
    assert args.dtype is DType.FLOAT16 and args.progress is False
    cfg = BenchConfig(**{name: getattr(args, name) for name in vars(BenchConfig())})
    assert cfg.sweep == (1, 2, 6)  # the comparison needs level 1
    assert cfg.runs_baseline
    assert cfg.prompts_for(6) == 9


def test_cache_options_are_parsed() -> None:
    argv = ["--shared-prefix-tokens", "256", "--multi-turn", "3", "--blocks-probe", "4"]
    args = _parser().parse_args(argv)
    cfg = BenchConfig(**{name: getattr(args, name) for name in vars(BenchConfig())})
    assert (cfg.shared_prefix_tokens, cfg.multi_turn, cfg.blocks_probe) == (256, 3, 4)
    assert cfg.probe == "blocks" and not cfg.ttft_probe
    assert BenchConfig(ttft_probe=True).probe == "ttft" and BenchConfig().probe is None


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"shared_prefix_tokens": -1}, "--shared-prefix-tokens"),
        ({"multi_turn": 0}, "--multi-turn"),
        ({"status_interval": 0}, "--status-interval"),
        ({"blocks_probe": -1}, "--blocks-probe"),
        ({"blocks_probe": 2}, "--shared-prefix-tokens >= 1"),
        ({"blocks_probe": 2, "shared_prefix_tokens": 8, "ttft_probe": True}, "pick one"),
        ({"baseline": True, "multi_turn": 2}, "--baseline"),
        ({"compare_baseline": True, "ttft_probe": True}, "--baseline"),
    ],
)
def test_bad_cache_options(kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        BenchConfig(**kwargs)  # type: ignore[arg-type]


def test_num_prompts_default_scales_with_level() -> None:
    cfg = BenchConfig()
    assert [cfg.prompts_for(level) for level in (1, 2, 4, 8)] == [4, 4, 8, 16]


def test_baseline_alone_runs_the_baseline() -> None:
    assert BenchConfig(baseline=True).runs_baseline
    assert not BenchConfig().runs_baseline


def test_help_mentions_every_option() -> None:
    text = _parser().format_help()
    for option in ("--base-url", "--concurrency", "--num-prompts", "--warmup", "--json",
                   "--baseline", "--compare-baseline", "--baseline-model", "--dtype",
                   "--shared-prefix-tokens", "--multi-turn", "--status-interval",
                   "--ttft-probe", "--blocks-probe"):  # fmt: skip
        assert option in text
    assert "blocks held by K concurrent ÷ (1 prefix + K suffixes)" in " ".join(text.split())


def test_bad_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(_parser().parse_args(["--max-tokens", "0"])) == 2
    assert "--max-tokens" in capsys.readouterr().err
    assert run_bench(_parser().parse_args(["--base-url", "localhost:8000/v1"])) == 2
    assert "--base-url" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--concurrency", "0"])
