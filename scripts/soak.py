"""Soak test: many streaming clients for minutes, some hanging up mid-stream.

    vllm-mlx serve --port 8050 &
    python scripts/soak.py --base-url http://127.0.0.1:8050 --clients 64 --duration 300

First each prompt is run alone (greedy) for its reference output. Then ``--clients``
clients stream requests back to back for ``--duration`` seconds; each request
hangs up after a random number of chunks with probability ``--disconnect-share``.
Every stream that runs to its end must equal its prompt's serial output (no lost
or garbled streams), and afterwards the server must be idle with every KV block
free or cached. Exit status 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

TOPICS = [
    "the sea", "a lighthouse", "bread", "trains", "the moon", "a garden", "rain", "chess",
    "a violin", "mountains", "bees", "a library", "winter", "rivers", "a clock", "volcanoes",
]  # fmt: skip


def prompt_for(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write two sentences about {TOPICS[i % len(TOPICS)]}."}]


@dataclass
class Tally:
    completed: int = 0
    matched: int = 0
    disconnected: int = 0
    garbled: list[str] = field(default_factory=list)  # completed but different
    failed: list[str] = field(default_factory=list)  # error status, error event, no [DONE]
    tokens: int = 0


async def stream_chat(
    client: httpx.AsyncClient, prompt: int, max_tokens: int, hang_up_after: int | None
) -> tuple[str, bool, int]:
    """(text, reached [DONE], chunks); hangs up after ``hang_up_after`` chunks if set."""
    body = {
        "model": "default",
        "messages": prompt_for(prompt),
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    parts: list[str] = []
    chunks = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return "".join(parts), True, chunks
            event: dict[str, Any] = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"error event: {event['error']}")
            for choice in event.get("choices", []):
                parts.append(choice.get("delta", {}).get("content") or "")
            chunks += 1
            if hang_up_after is not None and chunks >= hang_up_after:
                return "".join(parts), False, chunks  # leaving the block closes the connection
    return "".join(parts), False, chunks


async def client_loop(
    client: httpx.AsyncClient,
    refs: list[str],
    args: argparse.Namespace,
    rng: random.Random,
    until: float,
    tally: Tally,
) -> None:
    while time.monotonic() < until:
        prompt = rng.randrange(len(refs))
        hang_up = rng.randint(1, args.max_tokens) if rng.random() < args.disconnect_share else None
        try:
            text, done, chunks = await stream_chat(client, prompt, args.max_tokens, hang_up)
        except Exception as exc:  # counted, the soak goes on
            tally.failed.append(f"prompt {prompt}: {exc}")
            continue
        tally.tokens += chunks
        if hang_up is not None:
            tally.disconnected += 1
        elif not done:
            tally.failed.append(f"prompt {prompt}: stream ended without [DONE]")
        else:
            tally.completed += 1
            if text == refs[prompt]:
                tally.matched += 1
            else:
                tally.garbled.append(f"prompt {prompt}: {text[:60]!r} != {refs[prompt][:60]!r}")


async def wait_idle(client: httpx.AsyncClient, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = (await client.get("/v1/status")).json()
        if status["num_running"] == 0 and status["num_waiting"] == 0:
            return status
        if time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.2)


async def soak(args: argparse.Namespace) -> int:
    limits = httpx.Limits(max_connections=args.clients + 4)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(
        base_url=args.base_url.rstrip("/").removesuffix("/v1"),
        timeout=args.request_timeout,
        limits=limits,
        headers=headers,
    ) as client:
        refs = []
        for i in range(args.prompts):
            text, done, _ = await stream_chat(client, i, args.max_tokens, None)
            assert done, f"reference for prompt {i} did not finish"
            refs.append(text)
        print(f"references: {len(refs)} prompts run alone, {args.max_tokens} tokens each")
        tally = Tally()
        start = time.monotonic()
        until = start + args.duration
        await asyncio.gather(
            *(
                client_loop(client, refs, args, random.Random(args.seed + i), until, tally)
                for i in range(args.clients)
            )
        )
        elapsed = time.monotonic() - start
        status = await wait_idle(client)
    cache = status["cache"]
    summary = {
        "clients": args.clients,
        "duration_s": round(elapsed, 1),
        "completed": tally.completed,
        "matched_serial": tally.matched,
        "disconnected": tally.disconnected,
        "garbled": len(tally.garbled),
        "failed": len(tally.failed),
        "streamed_chunks_per_s": round(tally.tokens / elapsed, 1),
        "after": {
            "num_running": status["num_running"],
            "num_waiting": status["num_waiting"],
            "blocks_total": cache["blocks_total"],
            "blocks_used": cache["blocks_used"],
            "blocks_free": cache["blocks_free"],
            "blocks_cached": cache["blocks_cached"],
        },
    }
    print(json.dumps(summary, indent=2))
    for line in (tally.garbled + tally.failed)[:10]:
        print("  ", line)
    ok = (
        not tally.garbled
        and not tally.failed
        and tally.completed > 0
        and status["num_running"] == 0
        and status["num_waiting"] == 0
        and cache["blocks_used"] == 0
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default=None)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    p.add_argument("--disconnect-share", type=float, default=0.2)
    p.add_argument("--prompts", type=int, default=len(TOPICS))
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    return asyncio.run(soak(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
