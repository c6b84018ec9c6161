"""Measure structured-output costs with the embedded SmolLM2 tokenizer (vocab 49152).

For llguidance (our backend) and xgrammar (when installed: it needs torch), per schema:
tokenizer-info build time, compile time, and the time to compute one next-token
mask while walking a valid document token by token (median and p95). Then our
processor per token (mask + MLX apply + eval), and SmolLM2 decode tok/s through
EngineClient with and without the json_schema constraint, in this one process.
The machine may be shared: timings are medians of several repeats.

    .venv/bin/python scripts/measure_constraints.py [--repeats 5] [--decode-tokens 48]

xgrammar is not a dependency (it requires torch); to compare, install it aside,
e.g. ``pip install --target /tmp/xg xgrammar`` and run with ``PYTHONPATH=/tmp/xg``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from vllm_mlx.backend.blas import preload_blas  # noqa: E402  (must run before mlx loads)

preload_blas()

from vllm_mlx.structured import (  # noqa: E402
    compile_json_schema,
    constraint_factory,
    tokenizer_info,
    tool_call_schema,
)

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "color": {"enum": ["red", "green", "blue", "yellow"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 5},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name", "age", "color", "tags"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_web",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "limit": {"type": "integer"},
                    "sites": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["query"],
            },
        },
    },
]
PERSON_PLAIN_SCHEMA: dict[str, Any] = {  # the same without the email format (a big regex)
    **PERSON_SCHEMA,
    "properties": {k: v for k, v in PERSON_SCHEMA["properties"].items() if k != "email"},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": PERSON_SCHEMA,
    "person_plain": PERSON_PLAIN_SCHEMA,
    "tool_call": tool_call_schema(TOOLS, "required"),
}
# Valid documents (json.dumps separators, as both libraries are configured).
DOCUMENTS: dict[str, Any] = {
    "person": {
        "name": "Alice Smith",
        "age": 42,
        "color": "green",
        "tags": ["engineer", "climber", "coffee lover"],
        "email": "alice@example.com",
    },
    "person_plain": {
        "name": "Bob",
        "age": 7,
        "color": "blue",
        "tags": ["kid", "lego fan"],
    },
    "tool_call": {
        "name": "get_weather",
        "arguments": {"city": "San Francisco", "unit": "celsius", "days": 3},
    },
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _walk(fill: Callable[[], Any], consume: Callable[[int], bool], ids: list[int]) -> list[float]:
    """Microseconds to compute each next-token mask while feeding a valid document."""
    times = []
    for token in ids:
        start = time.perf_counter()
        fill()
        times.append((time.perf_counter() - start) * 1e6)
        if not consume(token):
            raise RuntimeError("the matcher rejected a valid document")
    return times


def measure_llguidance(hf: Any, repeats: int) -> list[dict[str, Any]]:
    import llguidance
    import numpy as np

    start = time.perf_counter()
    info = tokenizer_info(hf)
    info_s = time.perf_counter() - start
    rows = []
    for name, schema in SCHEMAS.items():
        ids = hf.encode(json.dumps(DOCUMENTS[name]), add_special_tokens=False)
        compile_s: list[float] = []
        walks: list[list[float]] = []
        for _ in range(repeats):
            start = time.perf_counter()
            grammar = compile_json_schema(schema, info)
            compile_s.append(time.perf_counter() - start)
            matcher = grammar.new_matcher()
            words = np.zeros((info.vocab_size + 31) // 32, dtype=np.int32)
            fill = partial(matcher.unsafe_compute_mask_ptr, words.ctypes.data, words.nbytes)
            walks.append(_walk(fill, matcher.consume_token, ids))
        lib = f"llguidance {llguidance.__version__}"
        rows.append(_row(lib, name, info_s, compile_s, walks))
    return rows


def measure_xgrammar(hf: Any, vocab_size: int, repeats: int) -> list[dict[str, Any]]:
    import numpy as np
    import xgrammar as xgr

    start = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=vocab_size)
    info_s = time.perf_counter() - start
    rows = []
    for name, schema in SCHEMAS.items():
        ids = hf.encode(json.dumps(DOCUMENTS[name]), add_special_tokens=False)
        compile_s: list[float] = []
        walks: list[list[float]] = []
        for _ in range(repeats):
            compiler = xgr.GrammarCompiler(info, cache_enabled=False)
            start = time.perf_counter()
            grammar = compiler.compile_json_schema(
                schema, any_whitespace=False, separators=(", ", ": ")
            )
            compile_s.append(time.perf_counter() - start)
            matcher = xgr.GrammarMatcher(grammar)
            words = np.zeros((1, (vocab_size + 31) // 32), dtype=np.int32)
            fill = partial(matcher.fill_next_token_bitmask, words)
            walks.append(_walk(fill, matcher.accept_token, ids))
        rows.append(_row(f"xgrammar {_dist_version('xgrammar')}", name, info_s, compile_s, walks))
    return rows


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _row(
    lib: str, schema: str, info_s: float, compile_s: list[float], walks: list[list[float]]
) -> dict[str, Any]:
    first = [walk[0] for walk in walks]  # the first mask of a fresh matcher
    rest = [t for walk in walks for t in walk[1:]]
    return {
        "library": lib,
        "schema": schema,
        "tokenizer_info_ms": round(info_s * 1e3, 1),
        "compile_ms_median": round(statistics.median(compile_s) * 1e3, 2),
        "first_mask_us_median": round(statistics.median(first), 1),
        "mask_us_median": round(statistics.median(rest), 1),
        "mask_us_p95": round(_pct(rest, 0.95), 1),
        "doc_tokens": len(walks[0]),
    }


def measure_processor(
    hf: Any, vocab_size: int, eos: frozenset[int], repeats: int
) -> dict[str, Any]:
    """Our GrammarConstraint per token: advance, mask, MLX unpack + where, eval."""
    import mlx.core as mx

    grammar = compile_json_schema(PERSON_SCHEMA, tokenizer_info(hf))
    ids = hf.encode(json.dumps(DOCUMENTS["person"]), add_special_tokens=False)
    logits = mx.random.normal((1, vocab_size))
    mx.eval(logits)
    per_token: list[float] = []
    baseline: list[float] = []  # evaluating unmasked logits, for comparison
    for _ in range(repeats):
        for _ in ids:
            start = time.perf_counter()
            mx.eval(logits * 1.0)
            baseline.append((time.perf_counter() - start) * 1e6)
        proc = constraint_factory(grammar, vocab_size, eos)()
        for i in range(len(ids)):
            start = time.perf_counter()
            mx.eval(proc(ids[:i], logits))
            per_token.append((time.perf_counter() - start) * 1e6)
    return {
        "processor_us_median": round(statistics.median(per_token), 1),
        "processor_us_p95": round(_pct(per_token, 0.95), 1),
        "unmasked_eval_us_median": round(statistics.median(baseline), 1),
    }


async def _decode_run(client: Any, request: Any) -> tuple[int, float, str]:
    from vllm_mlx.engine.types import Finished, TokenDelta

    first = end = None
    tokens, text = 0, []
    async for event in client.generate(request):
        if isinstance(event, TokenDelta):
            if first is None:
                first = time.perf_counter()
            tokens += len(event.token_ids)
            text.append(event.text)
        elif isinstance(event, Finished):
            end = time.perf_counter()
    if first is None or end is None or tokens < 2:
        return tokens, 0.0, "".join(text)
    return tokens, (tokens - 1) / (end - first), "".join(text)


def measure_decode(decode_tokens: int, pairs: int) -> dict[str, Any]:
    """SmolLM2 decode tok/s (first token to finish) with and without the constraint."""
    from vllm_mlx.backend.loader import load_model
    from vllm_mlx.backend.tokenizer import Tokenizer
    from vllm_mlx.config import EngineConfig, ModelConfig
    from vllm_mlx.engine.client import EngineClient
    from vllm_mlx.engine.types import GenerationRequest, SamplingParams

    async def main() -> dict[str, Any]:
        client = EngineClient(lambda: load_model(ModelConfig(None)), EngineConfig())
        loaded = await client.start()
        try:
            info = tokenizer_info(loaded.tokenizer)
            grammar = compile_json_schema(PERSON_SCHEMA, info)
            vocab = int(loaded.config["vocab_size"])
            make = constraint_factory(grammar, vocab, loaded.eos_token_ids)
            calls: list[float] = []  # seconds per processor call inside the engine

            def factory() -> Any:
                proc = make()

                def timed(history: list[int], logits: Any) -> Any:
                    start = time.perf_counter()
                    out = proc(history, logits)
                    calls.append(time.perf_counter() - start)
                    return out

                return timed

            messages = [{"role": "user", "content": "Describe a person as JSON."}]
            prompt = tuple(Tokenizer(loaded.tokenizer, loaded.eos_token_ids).encode_chat(messages))

            def request(rid: str, constrained: bool) -> GenerationRequest:
                params = SamplingParams(
                    max_tokens=decode_tokens, temperature=0.0, ignore_eos=not constrained
                )
                procs = (factory,) if constrained else ()
                return GenerationRequest(
                    request_id=rid,
                    prompt_token_ids=prompt,
                    sampling=params,
                    logits_processors=procs,
                )

            await _decode_run(client, request("warmup", False))
            rates: dict[str, list[float]] = {"plain": [], "json_schema": []}
            counts: dict[str, int] = {}
            sample = ""
            for i in range(pairs):
                for mode in ("plain", "json_schema"):
                    n, rate, text = await _decode_run(
                        client, request(f"{mode}{i}", mode != "plain")
                    )
                    rates[mode].append(rate)
                    counts[mode] = n
                    sample = text if mode != "plain" else sample
            return {
                "decode_tok_s_plain": round(statistics.median(rates["plain"]), 1),
                "decode_tok_s_json_schema": round(statistics.median(rates["json_schema"]), 1),
                "tokens_plain": counts["plain"],
                "tokens_json_schema": counts["json_schema"],
                "engine_processor_ms_median": round(statistics.median(calls) * 1e3, 3),
                "json_schema_sample": sample,
            }
        finally:
            await client.stop()

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="compiles and document walks")
    parser.add_argument("--decode-tokens", type=int, default=48)
    parser.add_argument("--decode-pairs", type=int, default=3, help="plain/constrained runs")
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from vllm_mlx.backend.loader import resolve_embedded

    path, _ = resolve_embedded()
    hf = AutoTokenizer.from_pretrained(str(path))
    vocab_size = int(json.loads((path / "config.json").read_text())["vocab_size"])
    print(f"tokenizer: {path.name}, {len(hf)} tokens; model vocab {vocab_size}")

    rows = measure_llguidance(hf, args.repeats)
    try:
        rows += measure_xgrammar(hf, vocab_size, args.repeats)
    except ImportError as exc:
        print(f"xgrammar skipped: {exc}")
    for row in rows:
        print(json.dumps(row))
    eos = frozenset({int(hf.eos_token_id)})
    print(json.dumps(measure_processor(hf, vocab_size, eos, args.repeats)))
    if not args.skip_decode:
        print(json.dumps(measure_decode(args.decode_tokens, args.decode_pairs)))


if __name__ == "__main__":
    main()
