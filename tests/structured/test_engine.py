"""The grammar constraint inside the engine: tiny llama (fast) and SmolLM2 (slow)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.structured.schemas import PERSON_SCHEMA, TOOLS
from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.backend.tokenizer import Tokenizer
from vllm_mlx.config import EngineConfig
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import (
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    LogitsProcessorFactory,
    SamplingParams,
    TokenDelta,
)
from vllm_mlx.structured import (
    compile_json_schema,
    constraint_factory,
    tokenizer_info,
    tool_call_schema,
)

EVENT_TIMEOUT_S = 120.0
MESSAGES = [{"role": "user", "content": "Describe a person as JSON."}]


def _tiny_loader(path: Path) -> Callable[[], LoadedModel]:
    import mlx_lm

    def load() -> LoadedModel:
        model, tok, cfg = mlx_lm.load(str(path), return_config=True)
        eos = frozenset(tok.eos_token_ids)
        return LoadedModel(model, tok, "tiny", path, cfg, 512, eos, "float32", "x", "cpu")

    return load


async def _generate(client: EngineClient, request: GenerationRequest) -> list[EngineEvent]:
    async def gather() -> list[EngineEvent]:
        return [event async for event in client.generate(request)]

    return await asyncio.wait_for(gather(), EVENT_TIMEOUT_S)


def _factory(loaded: LoadedModel, schema: dict[str, Any]) -> LogitsProcessorFactory:
    grammar = compile_json_schema(schema, tokenizer_info(loaded.tokenizer))
    return constraint_factory(grammar, int(loaded.config["vocab_size"]), loaded.eos_token_ids)


def _run_seeds(
    load: Callable[[], LoadedModel], schema: dict[str, Any], seeds: range, max_tokens: int
) -> list[tuple[str, Finished]]:
    """Submit one constrained request per seed (concurrently) at temperature 1."""

    async def main() -> list[tuple[str, Finished]]:
        client = EngineClient(load, EngineConfig())
        loaded = await client.start()
        try:
            factory = _factory(loaded, schema)
            prompt = tuple(Tokenizer(loaded.tokenizer, loaded.eos_token_ids).encode_chat(MESSAGES))

            def request(seed: int) -> GenerationRequest:
                params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed)
                return GenerationRequest(
                    request_id=f"s{seed}",
                    prompt_token_ids=prompt,
                    sampling=params,
                    logits_processors=(factory,),
                )

            runs = await asyncio.gather(*(_generate(client, request(s)) for s in seeds))
        finally:
            await client.stop()
        results = []
        for events in runs:
            final = events[-1]
            assert isinstance(final, Finished), final
            results.append(("".join(e.text for e in events if isinstance(e, TokenDelta)), final))
        return results

    return asyncio.run(main())


def _assert_all_valid(results: list[tuple[str, Finished]], schema: dict[str, Any]) -> None:
    for text, final in results:
        assert final.reason is FinishReason.STOP, (final, text)  # EOS, forced by the grammar
        jsonschema.validate(json.loads(text), schema)


def test_tiny_llama_writes_schema_valid_json(tiny_llama_path: Path) -> None:
    results = _run_seeds(_tiny_loader(tiny_llama_path), PERSON_SCHEMA, range(10), 160)
    _assert_all_valid(results, PERSON_SCHEMA)
    assert len({text for text, _ in results}) > 1  # temperature 1 really samples


def test_tiny_llama_forced_tool_call(tiny_llama_path: Path) -> None:
    schema = tool_call_schema(TOOLS, "get_weather")
    results = _run_seeds(_tiny_loader(tiny_llama_path), schema, range(3), 120)
    _assert_all_valid(results, schema)
    assert all(json.loads(text)["name"] == "get_weather" for text, _ in results)


@pytest.mark.slow
def test_smollm2_writes_schema_valid_json() -> None:
    from vllm_mlx.backend.loader import load_model
    from vllm_mlx.config import ModelConfig

    results = _run_seeds(lambda: load_model(ModelConfig(None)), PERSON_SCHEMA, range(20), 160)
    _assert_all_valid(results, PERSON_SCHEMA)
