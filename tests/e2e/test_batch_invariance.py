"""Batch invariance: a greedy request gives the same tokens alone and inside a batch.

Sixteen prompts of different lengths run one at a time, then all at once. The
token agreement is the share of positions where the two runs chose the same
token (per request, compared position by position over the longer of the two
sequences, then summed). On the tiny fp32 fixture it must be exactly 1.0.

Also a script that measures any running server (for example the embedded
SmolLM2)::

    python -m tests.e2e.test_batch_invariance --url http://127.0.0.1:8000 --max-tokens 32
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tests.conftest import LaunchServer

_TEXT = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman and his"
    " wife. Every morning he rowed out beyond the reef, and every evening he came home with"
    " a story. The capital of France is Paris. The capital of Italy is Rome. Water boils at"
    " one hundred degrees Celsius at sea level and freezes at zero degrees. A server receives"
    " requests, schedules them, runs the model, and streams tokens back. The weather today is"
    " sunny with a light breeze; tomorrow it may rain in the afternoon. She sells sea shells"
    " by the sea shore. In 1969, astronauts landed on the Moon; in 2024, engineers built"
    " smaller, faster chips. Music, art, science and history: four subjects that students"
    " learn at school each week. The end of the story came quickly: the storm passed, the"
    " boats returned, and everyone slept."
)


def invariance_prompts(count: int = 16) -> list[str]:
    """``count`` prompts from 3 to about 140 words, each starting somewhere else."""
    corpus = _TEXT.split()
    prompts = []
    for i in range(count):
        length = 3 + 9 * i
        start = (i * 11) % len(corpus)
        words = (corpus[start:] + corpus)[:length]
        prompts.append(f"Continue this text: {' '.join(words)}")
    return prompts


@dataclass(frozen=True)
class Agreement:
    matched: int  # positions where serial and concurrent chose the same token
    total: int  # positions compared (the longer run of each request)
    identical: int  # requests whose two runs are equal throughout
    requests: int
    max_running: int  # largest num_running seen in /v1/status during the batch (0: unknown)

    @property
    def fraction(self) -> float:
        return self.matched / self.total if self.total else 1.0

    def __str__(self) -> str:
        return (
            f"token agreement {self.fraction:.4f} ({self.matched}/{self.total} positions,"
            f" {self.identical}/{self.requests} requests identical,"
            f" up to {self.max_running} running together)"
        )


def greedy_tokens(http: httpx.Client, prompt: str, max_tokens: int, model: str) -> list[str]:
    """The chosen tokens of a greedy chat completion, read from its logprobs."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "logprobs": True,
    }
    resp = http.post("/v1/chat/completions", json=body)
    if resp.status_code != 200:
        raise RuntimeError(f"request failed with {resp.status_code}: {resp.text}")
    content = resp.json()["choices"][0]["logprobs"]["content"]
    return [item["token"] for item in content]


def _poll_running(http: httpx.Client, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        try:
            resp = http.get("/v1/status")
        except httpx.HTTPError:
            return
        if resp.status_code != 200:
            return  # a server without /v1/status: concurrency stays unknown
        seen.append(int(resp.json().get("num_running", 0)))
        stop.wait(0.02)


def measure_agreement(
    url: str, max_tokens: int = 24, model: str = "default", timeout_s: float = 120.0
) -> Agreement:
    """Run every prompt alone, then all at once, and compare the tokens."""
    prompts = invariance_prompts()
    with httpx.Client(base_url=url, timeout=timeout_s) as http:
        serial = [greedy_tokens(http, p, max_tokens, model) for p in prompts]
        barrier = threading.Barrier(len(prompts))

        def together(prompt: str) -> list[str]:
            barrier.wait(timeout=timeout_s)
            return greedy_tokens(http, prompt, max_tokens, model)

        stop, seen = threading.Event(), [0]
        poller = threading.Thread(target=_poll_running, args=(http, stop, seen), daemon=True)
        poller.start()
        try:
            with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
                futures = [pool.submit(together, p) for p in prompts]
                concurrent = [f.result(timeout=2 * timeout_s) for f in futures]
        finally:
            stop.set()
            poller.join(timeout=10)
    matched = total = identical = 0
    for alone, batched in zip(serial, concurrent, strict=True):
        matched += sum(a == b for a, b in zip(alone, batched, strict=False))
        total += max(len(alone), len(batched))
        identical += alone == batched
    return Agreement(matched, total, identical, len(prompts), max(seen))


def test_batch_invariance_on_tiny_fp32_model(
    launch_server: LaunchServer, tiny_llama_long_path: Path
) -> None:
    url = launch_server("--runtime-mode", "batched", model=tiny_llama_long_path).base_url
    result = measure_agreement(url, max_tokens=24)
    print(f"\nbatch invariance (tiny llama, fp32): {result}")
    assert result.total == 16 * 24  # greedy never ends a turn early on this fixture
    assert result.max_running > 1, f"the prompts never ran together: {result}"
    assert result.fraction == 1.0, str(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per request")
    parser.add_argument("--model", default="default", help="model id sent with each request")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument(
        "--min-agreement", type=float, default=None, help="exit 1 below this fraction (0-1)"
    )
    args = parser.parse_args(argv)
    result = measure_agreement(args.url.rstrip("/"), args.max_tokens, args.model, args.timeout)
    print(result)
    return 1 if args.min_agreement is not None and result.fraction < args.min_agreement else 0


if __name__ == "__main__":
    sys.exit(main())
