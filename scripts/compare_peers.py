"""Our server against mlx_lm.server on the same float32 weights, in one run, alternating.

    .venv/bin/python scripts/compare_peers.py --quick
    .venv/bin/python scripts/compare_peers.py --workloads a,b,c --levels 1,4,8,16

The embedded model's import is exported once to float32 with mlx-lm's own converter
(``mlx_lm convert -d --dtype float32``, cached beside the import). Both servers start
from this venv on free loopback ports, mlx_lm.server with OpenBLAS preloaded
(``LD_PRELOAD``; ours loads it itself). For every workload and level the same prompts
go to one server, then the other (the first one alternates per level), with
``vllm-mlx bench``'s client: streaming chat, greedy, EOS banned through logit_bias
so that both produce exactly max_tokens. Workloads:

    a: ~245-token prompts, 64 out
    b: ~32-token user prompts, 256 out (decode-bound)
    c: a 1,000-token shared system prompt + ~200 own tokens, 32 out
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from vllm_mlx.backend.blas import find_library
from vllm_mlx.backend.loader import resolve_model
from vllm_mlx.bench.config import BenchConfig
from vllm_mlx.bench.runner import run_sweep
from vllm_mlx.bench.stats import LevelStats


@dataclass(frozen=True)
class Workload:
    name: str
    prompt_tokens: int  # user message, ~tokens (the template adds ~30)
    max_tokens: int
    shared_prefix_tokens: int = 0


WORKLOADS = {
    "a": Workload("a", 215, 64),
    "b": Workload("b", 32, 256),
    "c": Workload("c", 200, 32, shared_prefix_tokens=1000),
}
QUICK_MAX_TOKENS = {"a": 32, "b": 96, "c": 16, "warm": 4}


def float32_weights() -> Path:
    """The embedded model as float32 MLX weights, exported by mlx-lm once."""
    src, _ = resolve_model(None)
    out = src.parent / f"{src.name}-float32"
    if not (out / "config.json").exists():
        cmd = [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(src)]
        cmd += ["--mlx-path", str(out), "-d", "--dtype", "float32"]
        subprocess.run(cmd, check=True)
    return out


def eos_ids(model_dir: Path) -> tuple[int, ...]:
    from mlx_lm.utils import load_tokenizer

    return tuple(sorted(load_tokenizer(model_dir).eos_token_ids))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """Start one server, wait for it to answer, yield its API root, stop it."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log_path}")
            try:
                if httpx.get(f"{root}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in time; see {log_path}")
            time.sleep(0.5)
        yield f"{root}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_cell(url: str, work: Workload, level: int, args: argparse.Namespace) -> LevelStats:
    requests = max(4, level) if args.quick else max(8, 2 * level)
    cfg = BenchConfig(
        base_url=url,
        model="default_model",  # mlx_lm.server's name for its --model; ours takes any
        concurrency=(level,),
        num_prompts=requests,
        prompt_tokens=work.prompt_tokens,
        max_tokens=QUICK_MAX_TOKENS[work.name] if args.quick else work.max_tokens,
        shared_prefix_tokens=work.shared_prefix_tokens,
        seed=args.seed,
        banned_tokens=args.eos,
        progress=False,
        timeout=1800,
    )
    return asyncio.run(run_sweep(cfg))[0]


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(work: Workload, level: int, ours: LevelStats, peer: LevelStats) -> str:
    ratio = ours.output_tok_s / peer.output_tok_s if peer.output_tok_s else float("nan")
    return (
        f"{work.name:<3} {level:>4} {ours.output_tok_s:>9.2f} {peer.output_tok_s:>9.2f} "
        f"{ratio:>6.2f}  {fmt(ours.ttft_ms_p50):>7} / {fmt(peer.ttft_ms_p50):<7} "
        f"{fmt(ours.itl_ms_p50):>5} / {fmt(peer.itl_ms_p50):<5} "
        f"{fmt(ours.itl_ms_p95):>5} / {fmt(peer.itl_ms_p95):<5} "
        f"{ours.failures:>2} / {peer.failures}"
    )


HEADER = (
    "wl  conc  ours t/s  peer t/s  ratio  TTFT p50 ms ours/peer  ITL p50 ms  ITL p95 ms"
    "  fail ours/peer"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="a,b,c")
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--quick", action="store_true", help="levels 1,16; fewer, shorter requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="append one JSON object per cell here")
    parser.add_argument("--log-dir", default="/tmp/vllm-mlx-compare")
    parser.add_argument("--serve-args", default="", help="extra arguments for our server")
    args = parser.parse_args()
    levels = (
        (1, 16)
        if args.quick and args.levels == "1,4,8,16"
        else tuple(int(x) for x in args.levels.split(","))
    )
    weights = float32_weights()
    args.eos = eos_ids(weights)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    blas = find_library(os.environ.get("VLLM_MLX_BLAS", ""))
    peer_env = {"LD_PRELOAD": str(blas)} if blas else {}
    ours_cmd = [sys.executable, "-m", "vllm_mlx", "serve", str(weights), *args.serve_args.split()]
    peer_cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(weights)]
    print(f"weights {weights}, EOS banned {args.eos}, OpenBLAS for the peer: {blas}", flush=True)
    with ExitStack() as stack:
        urls = {
            "ours": stack.enter_context(server("ours", ours_cmd, {}, log_dir)),
            "peer": stack.enter_context(server("mlx_lm.server", peer_cmd, peer_env, log_dir)),
        }
        warm = argparse.Namespace(**{**vars(args), "quick": True})
        for name in ("ours", "peer"):  # warm both up (kernels, caches) on a short request
            run_cell(urls[name], Workload("warm", 16, 4), 1, warm)
        print(HEADER, flush=True)
        flip = False
        for key in args.workloads.split(","):
            work = WORKLOADS[key]
            for level in levels:
                order = ("peer", "ours") if flip else ("ours", "peer")
                flip = not flip
                stats = {name: run_cell(urls[name], work, level, args) for name in order}
                print(report(work, level, stats["ours"], stats["peer"]), flush=True)
                if args.json:
                    with open(args.json, "a", encoding="utf-8") as out:
                        row = {"workload": key, "level": level}
                        row |= {n: asdict(s) for n, s in stats.items()}
                        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
