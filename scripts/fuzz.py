"""Fuzz every route of a live server with schemathesis, from its own /openapi.json.

    .venv/bin/python scripts/fuzz.py                      # the acceptance run (make fuzz)
    .venv/bin/python scripts/fuzz.py --max-examples 25    # a short run (tests/e2e/test_fuzz.py)
    .venv/bin/python scripts/fuzz.py --seed 1234          # replay a run schemathesis reported

Builds the tiny random-weight llama in a temporary directory, serves it on a free
loopback port (a 256-token window and a 16-token default, so no generation runs
long), runs ``schemathesis run`` against ``/openapi.json``, then asks for a plain
chat completion and a plain message. It fails when schemathesis reports a failed
check, when the server's access log shows any response >= 500, when fewer than
``--min-requests`` requests were answered, or when the server no longer answers.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the tests' fixtures: tiny model and live server

from tests.fixtures.server import run_server  # noqa: E402
from tests.fixtures.tiny_models import build_tiny_model  # noqa: E402
from vllm_mlx.backend.blas import preload_blas  # noqa: E402

SERVER_ARGS = ("--max-tokens", "16", "--effective-context-tokens", "256", "--timeout", "60")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
# uvicorn's access line: 127.0.0.1:50312 - "POST /v1/messages HTTP/1.1" 400 Bad Request
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
# The first line of a log record: ours ("2026-01-01 10:00:00,123 ERROR ...") or uvicorn's.
_RECORD = re.compile(r"^(?:\d{4}-\d\d-\d\d [\d:,]+ |)(?P<level>[A-Z]+):? ")


def schemathesis_command(base_url: str, args: argparse.Namespace) -> list[str]:
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(args.max_examples),
        "--workers",
        str(args.workers),
        "--request-timeout",
        "120",
        "--generation-database",
        "none",
        "--no-color",
    ]
    return cmd + (["--seed", str(args.seed)] if args.seed is not None else [])


def log_since(log_path: Path, offset: int) -> str:
    with log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", errors="replace")


def access_statuses(log: str) -> Counter[int]:
    """Response statuses in the server's access log."""
    return Counter(int(m["status"]) for m in _ACCESS.finditer(log))


def error_records(log: str) -> str:
    """The server's ERROR records, tracebacks included."""
    kept, keep = [], False
    for line in log.splitlines():
        record = _RECORD.match(line)
        if record:
            keep = record["level"] == "ERROR"
        if keep:
            kept.append(line)
    return "\n".join(kept)


def still_answers(base_url: str) -> list[str]:
    """Problems with a plain chat completion and a plain message (none: it answers)."""
    user = [{"role": "user", "content": "Hello! What is two plus two?"}]
    requests = {
        "/v1/chat/completions": {"model": "default", "messages": user, "max_tokens": 8},
        "/v1/messages": {"model": "default", "messages": user, "max_tokens": 8},
    }
    problems = []
    for path, body in requests.items():
        resp = httpx.post(base_url + path, json=body, timeout=60)
        if resp.status_code != 200:
            problems.append(f"{path}: {resp.status_code} {resp.text[:300]}")
        else:
            print(f"after the fuzz, {path}: 200 {resp.text[:160]}")
    return problems


def run(args: argparse.Namespace) -> int:
    preload_blas()  # before anything imports mlx (the tiny model's builder does)
    with tempfile.TemporaryDirectory(prefix="vllm-mlx-fuzz-") as tmp:
        model = build_tiny_model(Path(tmp) / "tiny-llama", "llama")
        with run_server(model, SERVER_ARGS, work_dir=Path(tmp) / "server") as server:
            offset = server.log_path.stat().st_size
            started = time.monotonic()
            cmd = schemathesis_command(server.base_url, args)
            print("$", " ".join(cmd), flush=True)
            fuzz_rc = subprocess.run(cmd, cwd=tmp, check=False).returncode
            elapsed = time.monotonic() - started
            log = log_since(server.log_path, offset)
            problems = still_answers(server.base_url)
    statuses = access_statuses(log)
    if any(status >= 500 for status in statuses):
        print(error_records(log)[-30000:])
    sent = sum(statuses.values())
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    by_status = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    print(f"fuzz: {sent} requests in {elapsed:.0f} s ({by_status}); {server_errors} were >= 500")
    if fuzz_rc != 0:
        problems.append(f"schemathesis exited with {fuzz_rc}")
    if server_errors:
        problems.append(f"{server_errors} responses >= 500")
    if sent < args.min_requests:
        problems.append(f"only {sent} requests were sent (wanted {args.min_requests})")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=200, help="cases per operation")
    parser.add_argument("--min-requests", type=int, default=2000, help="fewer fails the run")
    # One worker: with two, Hypothesis threads moving the recursion limit under each other
    # sometimes break CPython 3.11's ast.parse ("AST constructor recursion depth mismatch").
    parser.add_argument("--workers", type=int, default=1, help="schemathesis workers")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis seed to replay")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
