"""EngineCore through EngineClient on the tiny llama: determinism, abort, errors, stats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

from vllm_mlx.backend.model import LoadedModel
from vllm_mlx.config import CacheConfig, EngineConfig, RuntimeMode
from vllm_mlx.engine.client import EngineClient
from vllm_mlx.engine.types import (
    EngineError,
    EngineEvent,
    EngineStats,
    ErrorKind,
    Finished,
    FinishReason,
    GenerationRequest,
    RequestObserver,
    RequestRecord,
    SamplingParams,
    TokenDelta,
)

CONTEXT = 128  # a small window so the context tests stay fast
LONG_CONTEXT = 4096  # RoPE needs no learned positions, so the tiny model runs this far
EVENT_TIMEOUT_S = 20.0

Body = Callable[[EngineClient, LoadedModel], Awaitable[None]]


def _make_loader(path: Path, context: int) -> Callable[[], LoadedModel]:
    import mlx_lm

    def load() -> LoadedModel:
        model, tok, cfg = mlx_lm.load(str(path), return_config=True)
        eos = frozenset(tok.eos_token_ids)
        return LoadedModel(model, tok, "tiny", path, cfg, context, eos, "float32", "x", "cpu")

    return load


@pytest.fixture(scope="module")
def loader(tiny_llama_path: Path) -> Callable[[], LoadedModel]:
    return _make_loader(tiny_llama_path, CONTEXT)


@pytest.fixture(scope="module")
def long_loader(tiny_llama_path: Path) -> Callable[[], LoadedModel]:
    """A window far longer than any test waits for, so only an abort can end a request."""
    return _make_loader(tiny_llama_path, LONG_CONTEXT)


def _serve(
    loader: Callable[[], LoadedModel],
    body: Body,
    observer: RequestObserver | None = None,
    **config: Any,
) -> None:
    async def main() -> None:
        client = EngineClient(loader, EngineConfig(**config), observer)
        loaded = await client.start()
        try:
            await body(client, loaded)
        finally:
            await client.stop()

    asyncio.run(main())


async def _events(client: EngineClient, request: GenerationRequest) -> list[EngineEvent]:
    async def gather() -> list[EngineEvent]:
        return [event async for event in client.generate(request)]

    return await asyncio.wait_for(gather(), EVENT_TIMEOUT_S)


def _request(rid: str, prompt: list[int] | tuple[int, ...], **params: Any) -> GenerationRequest:
    params.setdefault("max_tokens", 16)
    params.setdefault("temperature", 0.0)
    return GenerationRequest(
        request_id=rid, prompt_token_ids=tuple(prompt), sampling=SamplingParams(**params)
    )


def _prompt(loaded: LoadedModel, text: str = "The capital of France is") -> list[int]:
    return list(loaded.tokenizer.encode(text))


def _text(events: list[EngineEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenDelta))


def _ids(events: list[EngineEvent]) -> list[int]:
    return [t for e in events if isinstance(e, TokenDelta) for t in e.token_ids]


async def _stats_where(
    client: EngineClient, ready: Callable[[EngineStats], bool], timeout_s: float = 5.0
) -> EngineStats:
    """Stats are published after each engine step; wait until they show ``ready``."""
    deadline = time.monotonic() + timeout_s
    while not ready(stats := client.stats()):
        assert time.monotonic() < deadline, f"stats never got there: {stats}"
        await asyncio.sleep(0.005)
    return stats


def _final(events: list[EngineEvent]) -> Finished | EngineError:
    last = events[-1]
    assert isinstance(last, Finished | EngineError)
    assert all(isinstance(e, TokenDelta) for e in events[:-1])
    return last


def test_greedy_is_deterministic(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded)
        first = await _events(client, _request("a", prompt, max_tokens=20))
        second = await _events(client, _request("b", prompt, max_tokens=20))
        assert _ids(first) == _ids(second)
        assert _text(first) == _text(second)
        final = _final(first)
        assert isinstance(final, Finished)
        assert final.reason is FinishReason.LENGTH
        assert final.usage.prompt_tokens == len(prompt)
        assert final.usage.completion_tokens == 20 == len(_ids(first))
        assert _text(first) == loaded.tokenizer.decode(_ids(first))
        assert _text(first).strip()

    _serve(loader, body)


def test_seeded_sampling_is_reproducible(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded)
        runs = []
        for rid, seed in (("a", 11), ("b", 11), ("c", 12)):
            request = _request(rid, prompt, max_tokens=24, temperature=1.0, seed=seed)
            runs.append(_ids(await _events(client, request)))
        assert runs[0] == runs[1]
        assert runs[0] != runs[2]

    _serve(loader, body)


def test_logprobs_come_with_every_token(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        request = _request("a", _prompt(loaded), max_tokens=6, logprobs=True, top_logprobs=3)
        events = await _events(client, request)
        deltas = [e for e in events if isinstance(e, TokenDelta)]
        assert sum(len(d.logprobs) for d in deltas) == 6
        for delta in deltas:
            assert [lp.token_id for lp in delta.logprobs] == list(delta.token_ids)
            for lp in delta.logprobs:
                assert len(lp.top) == 3
                assert lp.top[0].token_id == lp.token_id  # greedy picks the best
                assert lp.logprob == pytest.approx(lp.top[0].logprob)
                values = [t.logprob for t in lp.top]
                assert values == sorted(values, reverse=True)
                assert all(v <= 0.0 for v in values)

    _serve(loader, body)


def test_stream_interval_batches_tokens(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        events = await _events(client, _request("a", _prompt(loaded), max_tokens=10))
        sizes = [len(e.token_ids) for e in events if isinstance(e, TokenDelta)]
        assert sizes == [4, 4, 2]

    _serve(loader, body, stream_interval=4)


def test_stop_string_ends_generation(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded)
        full = _text(await _events(client, _request("a", prompt, max_tokens=30)))
        stop = full[len(full) // 2 : len(full) // 2 + 3]
        assert stop and full.index(stop) > 0
        events = await _events(client, _request("b", prompt, max_tokens=30, stop=(stop,)))
        final = _final(events)
        assert isinstance(final, Finished)
        assert final.reason is FinishReason.STOP
        assert final.stop_sequence == stop
        assert _text(events) == full[: full.index(stop)]

    _serve(loader, body)


def test_abort_mid_generation(long_loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded)
        request = _request("long", prompt, max_tokens=LONG_CONTEXT, ignore_eos=True)
        events: list[EngineEvent] = []
        aborted_at = 0.0
        async for event in client.generate(request):
            events.append(event)
            if len(events) == 2:
                # Stats are published at most every 0.1 s while busy: wait for a fresh one.
                stats = await _stats_where(
                    client,
                    lambda s: s.num_running == 1 and s.requests[0].generated_tokens >= 1,
                )
                (status,) = stats.requests
                assert (status.request_id, status.phase) == ("long", "generation")
                assert status.max_tokens == LONG_CONTEXT
                aborted_at = time.monotonic()
                client.abort("long")
        final = _final(events)
        assert isinstance(final, Finished)
        assert final.reason is FinishReason.ABORT
        assert time.monotonic() - aborted_at < 2.0
        assert 2 <= final.usage.completion_tokens < 500
        # The engine is free again and serves the next request in full.
        after = await _events(client, _request("next", prompt, max_tokens=5))
        assert len(_ids(after)) == 5

    _serve(long_loader, body)


def test_closing_the_stream_aborts(long_loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded)
        request = _request("long", prompt, max_tokens=LONG_CONTEXT, ignore_eos=True)
        stream = client.generate(request)
        first = await anext(stream)
        assert isinstance(first, TokenDelta)
        await stream.aclose()
        after = await _events(client, _request("next", prompt, max_tokens=5))
        assert isinstance(_final(after), Finished)
        assert len(_ids(after)) == 5
        stats = await _stats_where(client, lambda s: s.total_requests_processed == 2)
        assert stats.total_completion_tokens < 500  # the first one was cut short

    _serve(long_loader, body)


def test_queued_requests_are_served_in_turn(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded)
        alone = _ids(await _events(client, _request("solo", prompt, max_tokens=8)))
        both = await asyncio.gather(
            _events(client, _request("x", prompt, max_tokens=8)),
            _events(client, _request("y", prompt, max_tokens=8)),
        )
        assert [_ids(events) for events in both] == [alone, alone]

    _serve(loader, body)


def test_past_deadline_times_out(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = tuple(_prompt(loaded))
        params = SamplingParams(max_tokens=50, temperature=0.0)
        request = GenerationRequest(
            request_id="late",
            prompt_token_ids=prompt,
            sampling=params,
            deadline=time.monotonic() - 1.0,
        )
        events = await _events(client, request)
        final = _final(events)
        assert isinstance(final, Finished)
        assert final.reason is FinishReason.TIMEOUT
        assert final.usage.completion_tokens == 0

    _serve(loader, body)


@pytest.mark.parametrize("extra", [0, 20])
def test_prompt_that_fills_the_context_is_refused(
    loader: Callable[[], LoadedModel], extra: int
) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = [100 + i % 50 for i in range(CONTEXT + extra)]
        events = await _events(client, _request("big", prompt))
        assert len(events) == 1
        error = events[0]
        assert isinstance(error, EngineError)
        assert error.kind is ErrorKind.INVALID_REQUEST
        assert str(CONTEXT) in error.message

    _serve(loader, body)


def test_prompt_one_short_of_context_gets_one_token(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = [100 + i % 50 for i in range(CONTEXT - 1)]
        events = await _events(client, _request("edge", prompt, max_tokens=50))
        final = _final(events)
        assert isinstance(final, Finished)
        assert final.reason is FinishReason.LENGTH
        assert final.usage.completion_tokens == 1

    _serve(loader, body, prefill_chunk_tokens=32)  # also crosses several prefill chunks


def test_empty_prompt_is_refused(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        events = await _events(client, _request("empty", []))
        assert len(events) == 1
        assert isinstance(events[0], EngineError)
        assert events[0].kind is ErrorKind.INVALID_REQUEST

    _serve(loader, body)


def test_chunked_prefill_matches_single_pass(loader: Callable[[], LoadedModel]) -> None:
    results: list[list[int]] = []

    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded, "Once upon a time, in a small village by the sea, there lived")
        results.append(_ids(await _events(client, _request("a", prompt, max_tokens=8))))

    _serve(loader, body, prefill_chunk_tokens=3)
    _serve(loader, body)
    assert results[0] == results[1]


def test_stats_count_finished_requests(loader: Callable[[], LoadedModel]) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        assert client.stats().total_requests_processed == 0
        prompt = _prompt(loaded)
        await _events(client, _request("a", prompt, max_tokens=5))
        await _events(client, _request("b", prompt, max_tokens=7))
        stats = await _stats_where(client, lambda s: s.total_requests_processed == 2)
        assert stats.total_prompt_tokens == 2 * len(prompt)
        assert stats.total_completion_tokens == 12
        assert stats.steps_executed >= 12
        assert stats.num_running == stats.num_waiting == 0
        assert stats.requests == ()

    _serve(loader, body)


def test_load_failure_is_raised_by_start() -> None:
    def broken() -> LoadedModel:
        raise FileNotFoundError("no such model")

    async def main() -> None:
        client = EngineClient(broken, EngineConfig())
        with pytest.raises(FileNotFoundError, match="no such model"):
            await client.start()
        await client.stop()

    asyncio.run(main())


def test_logits_processor_sees_all_generated_tokens(loader: Callable[[], LoadedModel]) -> None:
    histories: list[list[int]] = []

    def factory() -> Callable[[list[int], mx.array], mx.array]:
        def record(history: list[int], logits: mx.array) -> mx.array:
            histories.append(list(history))
            return logits

        return record

    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        params = SamplingParams(max_tokens=5, temperature=0.0)
        request = GenerationRequest(
            request_id="h",
            prompt_token_ids=tuple(_prompt(loaded)),
            sampling=params,
            logits_processors=(factory,),
        )
        out = _ids(await _events(client, request))
        # The call that picks token i must see the i tokens before it.
        assert [len(h) for h in histories[:5]] == [0, 1, 2, 3, 4]
        assert histories[:5] == [out[:i] for i in range(5)]

    _serve(loader, body)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("trigger", ["factory", "seed"])
def test_bad_request_setup_fails_only_that_request(
    loader: Callable[[], LoadedModel], trigger: str
) -> None:
    def broken_factory() -> Callable[[list[int], mx.array], mx.array]:
        raise RuntimeError("grammar failed to compile")

    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = tuple(_prompt(loaded))
        if trigger == "factory":
            params = SamplingParams(max_tokens=4, temperature=0.0)
            bad = GenerationRequest(
                request_id="bad",
                prompt_token_ids=prompt,
                sampling=params,
                logits_processors=(broken_factory,),
            )
        else:
            bad = _request("bad", prompt, max_tokens=4, temperature=1.0, seed=-1)
        # A live engine answers in milliseconds; a dead thread never does.
        events = await asyncio.wait_for(_events(client, bad), 1.0)
        assert isinstance(_final(events), EngineError | Finished)
        after = await asyncio.wait_for(_events(client, _request("ok", prompt, max_tokens=3)), 3.0)
        assert len(_ids(after)) == 3

    _serve(loader, body)


def test_observer_gets_one_record_per_retired_sequence(loader: Callable[[], LoadedModel]) -> None:
    records: list[RequestRecord] = []
    finals: list[Finished | EngineError] = []

    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompt = _prompt(loaded)
        for rid, max_tokens in (("a", 5), ("b", 1)):
            finals.append(
                _final(await _events(client, _request(rid, prompt, max_tokens=max_tokens)))
            )
        late = GenerationRequest(
            request_id="t",
            prompt_token_ids=tuple(prompt),
            sampling=SamplingParams(max_tokens=5),
            deadline=time.monotonic(),
        )
        finals.append(_final(await _events(client, late)))
        await _events(client, _request("empty", []))  # refused before it is a sequence

    _serve(loader, body, observer=records.append)
    assert [r.request_id for r in records] == ["a", "b", "t"]
    for record, final in zip(records, finals, strict=True):
        assert isinstance(final, Finished)
        assert record.finish_reason is final.reason
        usage = final.usage
        assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
        )
        assert len(record.itls) == max(0, usage.completion_tokens - 1)
        assert all(gap >= 0 for gap in record.itls)
        assert record.arrival_time <= record.finish_time
    a, b, t = records
    assert (a.finish_reason, b.finish_reason, t.finish_reason) == (
        FinishReason.LENGTH,
        FinishReason.LENGTH,
        FinishReason.TIMEOUT,
    )
    assert a.first_token_time is not None and a.ttft_s is not None
    assert a.arrival_time <= a.first_token_time <= a.finish_time
    assert t.first_token_time is None and t.ttft_s is None and t.itls == ()


def test_preemptions_are_counted_and_recomputes_are_no_new_queries(
    loader: Callable[[], LoadedModel],
) -> None:
    async def body(client: EngineClient, loaded: LoadedModel) -> None:
        prompts = [_prompt(loaded, f"Story {i}: once upon a time") for i in range(4)]
        # 16 blocks of 16 tokens hold 256; four sequences of ~110 tokens cannot all stay.
        requests = [_request(f"p{i}", p, max_tokens=100) for i, p in enumerate(prompts)]
        results = await asyncio.gather(*(_events(client, r) for r in requests))
        finals = [_final(events) for events in results]
        assert all(isinstance(f, Finished) and f.usage.completion_tokens == 100 for f in finals)
        stats = await _stats_where(client, lambda s: s.total_requests_processed == 4)
        assert stats.num_preemptions > 0
        facts = [f.facts for f in finals if isinstance(f, Finished)]
        assert any(fact.preempted for fact in facts)  # the final events say which
        # All four were accepted before any finished: each saw the ones accepted before it.
        seen = sorted(f.running_at_admission + f.waiting_at_admission for f in facts)
        assert seen == [0, 1, 2, 3]
        assert stats.cache.blocks_total == 16
        assert stats.cache.query_tokens == sum(map(len, prompts))
        cached = sum(f.usage.cached_tokens for f in finals if isinstance(f, Finished))
        assert stats.cache.hit_tokens == cached

    cache = CacheConfig(memory_percent=1e-9)  # the smallest pool: 16 blocks
    _serve(loader, body, runtime_mode=RuntimeMode.BATCHED, cache=cache)
