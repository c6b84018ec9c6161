"""Chat latency beside embeddings: 8 chat streams alone, then beside 64 embedding requests.

    vllm-mlx serve --port 8093 &
    python scripts/embedding_interference.py --base-url http://127.0.0.1:8093

Prints the chat streams' inter-token latency p50/p95 in both runs and the p95 ratio
(issue 11: under 2x). Each embedding input is ~130 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

TEXT = "The quick brown fox jumps over the lazy dog while the server batches requests. " * 8


async def chat(client: httpx.AsyncClient, i: int, itls: list[float], max_tokens: int) -> None:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": f"Tell me story {i} about a lighthouse."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    last = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data:") and '"content"' in line:
                now = time.perf_counter()
                if last is not None:
                    itls.append(now - last)
                last = now


async def embed(client: httpx.AsyncClient, i: int) -> None:
    resp = await client.post("/v1/embeddings", json={"model": "default", "input": f"{i} {TEXT}"})
    resp.raise_for_status()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


async def run(args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.chats + args.embeddings + 4)
    async with httpx.AsyncClient(base_url=args.base_url, timeout=600, limits=limits) as client:
        await embed(client, -1)  # the embedding model loads on first use
        await asyncio.gather(*(chat(client, i, [], args.max_tokens) for i in range(args.chats)))
        alone: list[float] = []
        await asyncio.gather(*(chat(client, i, alone, args.max_tokens) for i in range(args.chats)))
        beside: list[float] = []
        await asyncio.gather(
            *(chat(client, i, beside, args.max_tokens) for i in range(args.chats)),
            *(embed(client, i) for i in range(args.embeddings)),
        )
    ms = {
        "itl_p50_alone_ms": statistics.median(alone) * 1e3,
        "itl_p50_beside_ms": statistics.median(beside) * 1e3,
        "itl_p95_alone_ms": p95(alone) * 1e3,
        "itl_p95_beside_ms": p95(beside) * 1e3,
    }
    result = {k: round(v, 1) for k, v in ms.items()}
    result["p95_ratio"] = round(p95(beside) / p95(alone), 2)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--chats", type=int, default=8)
    p.add_argument("--embeddings", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=96)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
