"""`vllm-mlx bench`: a load generator for any OpenAI-compatible server.

The CLI wires two functions: ``add_bench_arguments`` fills the subcommand's
parser and ``run_bench`` turns the parsed namespace into a frozen
``BenchConfig`` and runs it. Nothing past ``run_bench`` sees the namespace.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from vllm_mlx.bench.config import DEFAULT_BASE_URL, BenchConfig, parse_concurrency
from vllm_mlx.config import DType

__all__ = ["BenchConfig", "add_bench_arguments", "run_bench"]

logger = logging.getLogger("vllm_mlx.bench")

_DESCRIPTION = "Load generator for any OpenAI-compatible server (streaming chat)."

_EPILOG = """\
Each level keeps exactly N requests in flight until --num-prompts requests have
completed, then reports aggregate output tok/s, request/s, TTFT/ITL percentiles,
TPOT, per-request decode tok/s (= 1/TPOT), failures and the mean prompt length
reported by the server. Requests stream with stream_options.include_usage and
ignore_eos, so every request produces exactly --max-tokens tokens.

Prefix cache: a second table shows, per level, the mean cached prompt tokens
(usage.prompt_tokens_details.cached_tokens) and the hit rate cached/prompt
tokens, TTFT p50 and cached tokens of first vs later turns (--multi-turn), and
what GET {root}/v1/status said: cache.hit_rate before>after the level, the peak
cache.blocks_used / blocks_total and num_running (polled every
--status-interval seconds) and runtime.mode. Fields a server does not send are
shown as '-' (null in JSON).

Probes replace the sweep: --ttft-probe times one long prompt cold, warm and
with a new suffix; --blocks-probe K compares the KV blocks held by K concurrent
shared-prefix requests with prefix_blocks + K x suffix_blocks;
--interference-probe K measures how one --long-prompt-tokens prompt slows K
short chats (and they it), with issue 16's PASS/FAIL criteria. They print text
and JSON lines (to --json PATH, else stdout).

Exit status: 0 when every request succeeded, 1 when any failed, 2 on bad options.

examples:
  vllm-mlx bench --concurrency 1,2,4,8 --json results.jsonl
  vllm-mlx bench --baseline --max-tokens 128
  vllm-mlx bench --compare-baseline --concurrency 1,4
  vllm-mlx bench --concurrency 4 --shared-prefix-tokens 1024 --prompt-tokens 64
  vllm-mlx bench --concurrency 2 --multi-turn 4 --prompt-tokens 64 --max-tokens 32
  vllm-mlx bench --ttft-probe --prompt-tokens 1500
  vllm-mlx bench --blocks-probe 8 --shared-prefix-tokens 512 --prompt-tokens 16 --max-tokens 32
  vllm-mlx bench --interference-probe 4 --long-prompt-tokens 6000 --prompt-tokens 100
"""


def _concurrency_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_concurrency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _token_ids_arg(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids: {text!r}") from None


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target server")
    group.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help="OpenAI-compatible API root; requests go to {base-url}/chat/completions "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--model",
        default="default",
        help="value of the request's 'model' field (default: %(default)s)",
    )
    group.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY'")
    group.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="wall-clock limit of one request in seconds; slower requests count as "
        "failures (default: %(default)s)",
    )


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load")
    group.add_argument(
        "--concurrency",
        type=_concurrency_arg,
        default=(1, 2, 4, 8),
        metavar="N[,N...]",
        help="comma-separated sweep of in-flight request counts (default: 1,2,4,8)",
    )
    group.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help="measured requests per level, or conversations per level with --multi-turn, "
        "or rounds of --ttft-probe (default: max(4, 2 x level); 1 round)",
    )
    group.add_argument(
        "--prompt-tokens",
        type=int,
        default=128,
        help="approximate length of the user message in tokens, built from seeded random "
        "words; the chat template adds its own tokens, and the table reports the server's "
        "real count (default: %(default)s)",
    )
    group.add_argument(
        "--max-tokens",
        type=int,
        default=64,
        help="output tokens per request, fixed via ignore_eos (default: %(default)s)",
    )
    group.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature (default: %(default)s)"
    )
    group.add_argument(
        "--banned-tokens",
        type=_token_ids_arg,
        default=(),
        metavar="ID[,ID...]",
        help="token ids sent with logit_bias -100, for servers that ignore 'ignore_eos' "
        "(mlx_lm.server): ban the EOS ids to get fixed-length outputs there too",
    )
    group.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="unmeasured requests sent before the sweep, with their own prompts (default: 0)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic prompts; change it to avoid the server's prefix cache "
        "between runs (default: %(default)s)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--json",
        dest="json_path",
        default=None,
        metavar="PATH",
        help="append one JSON object per level to PATH; '-' writes them to stdout and "
        "moves the table to stderr",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="hide the per-level progress bars on stderr",
    )


def _add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mlx-lm baseline")
    group.add_argument(
        "--baseline",
        action="store_true",
        help="no server: run the same prompts through mlx-lm in-process at concurrency 1 "
        "(label 'mlx-lm direct')",
    )
    group.add_argument(
        "--compare-baseline",
        action="store_true",
        help="at concurrency 1, alternate each prompt between mlx-lm in-process and the "
        "server (so machine drift hits both alike), run the other levels, and print "
        "'server/baseline decode tok/s at concurrency 1' (level 1 is added if missing)",
    )
    group.add_argument(
        "--baseline-model",
        default=None,
        metavar="MODEL",
        help="model for the baseline, resolved like 'vllm-mlx serve MODEL' "
        "(default: the embedded default model); use the model the server runs",
    )
    group.add_argument(
        "--dtype",
        type=DType,
        default=DType.AUTO,
        metavar="{" + ",".join(d.value for d in DType) + "}",
        help="weight dtype of the baseline model, as in 'serve --dtype' (default: auto)",
    )


def _add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prefix cache")
    group.add_argument(
        "--shared-prefix-tokens",
        type=int,
        default=0,
        metavar="N",
        help="start every request of a level with the same ~N-token system message (seeded "
        "words, new for each level), then its own user message, so the server's prefix "
        "cache can share it (default: 0, no system message)",
    )
    group.add_argument(
        "--multi-turn",
        type=int,
        default=1,
        metavar="T",
        help="each simulated user holds a T-turn conversation: turn k+1 resends every "
        "earlier user message and the assistant replies it received, plus a new "
        "--prompt-tokens user message; TTFT and cached tokens are reported for turn 1 "
        "vs turns >= 2 (default: 1)",
    )
    group.add_argument(
        "--status-interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="poll GET {root}/v1/status this often during a level for the peak "
        "cache.blocks_used and num_running; root is --base-url without /v1 "
        "(default: %(default)s; the blocks probe polls at least every 0.05 s)",
    )


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prefix-cache probes (instead of the sweep)")
    group.add_argument(
        "--ttft-probe",
        action="store_true",
        help="send one ~--prompt-tokens prompt cold (unique text, max_tokens 1), again "
        "(warm: fully cached) and with a new 16-token suffix (prefix hit); print cold, "
        "warm and prefix TTFT and the warm/cold and prefix/cold ratios "
        "(medians over --num-prompts rounds, default 1)",
    )
    group.add_argument(
        "--blocks-probe",
        type=int,
        default=0,
        metavar="K",
        help="send one request with the --shared-prefix-tokens system prompt alone, then K "
        "concurrent ones sharing it, each with its own --prompt-tokens suffix and "
        "--max-tokens output; poll /v1/status for the peak cache.blocks_used and print "
        "'blocks held by K concurrent ÷ (1 prefix + K suffixes)' with the formula's inputs",
    )


def _add_interference_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("long-prompt interference probe (instead of the sweep)")
    group.add_argument(
        "--interference-probe",
        type=int,
        default=0,
        metavar="K",
        help="four runs, each with fresh prompts: K concurrent chats (--prompt-tokens, "
        "--max-tokens) alone; the long prompt alone (max_tokens 4); the long prompt sent "
        "once every chat has streamed a token; the long prompt, then the K chats after "
        "--interference-delay. Prints chat ITL p50/p95 (alone, and after the long prompt "
        "was sent), chat TTFTs, long-prompt TTFTs and PASS/FAIL for: ITL p95 during <= 2x "
        "alone, every chat's TTFT after the long prompt <= 5 s, long TTFT <= 1.5x alone; "
        "--warmup N sends N unmeasured chats first",
    )
    group.add_argument(
        "--long-prompt-tokens",
        type=int,
        default=6000,
        metavar="N",
        help="approximate length of the interference probe's long prompt; the server's "
        "usage.prompt_tokens is printed (default: %(default)s)",
    )
    group.add_argument(
        "--interference-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="in the interference probe's last run, wait this long after sending the long "
        "prompt before sending the chats (default: %(default)s)",
    )


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every `vllm-mlx bench` option to ``parser``."""
    parser.description = parser.description or _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    _add_target_arguments(parser)
    _add_load_arguments(parser)
    _add_cache_arguments(parser)
    _add_probe_arguments(parser)
    _add_interference_arguments(parser)
    _add_output_arguments(parser)
    _add_baseline_arguments(parser)


def run_bench(args: argparse.Namespace) -> int:
    """Run `vllm-mlx bench` with parsed arguments; returns the exit status."""
    try:
        cfg = BenchConfig(**{f.name: getattr(args, f.name) for f in fields(BenchConfig)})
    except ValueError as exc:
        print(f"vllm-mlx bench: error: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise
    from vllm_mlx.bench.main import execute

    try:
        return execute(cfg)
    except KeyboardInterrupt:
        logger.warning("interrupted")
        return 130
    except Exception as exc:  # edge of the CLI: report, don't dump a traceback
        logger.error("vllm-mlx bench failed: %s: %s", type(exc).__name__, exc)
        logger.debug("traceback", exc_info=True)
        return 1
