"""SequenceState turns sampled tokens into deltas and exactly one Finished event."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from vllm_mlx.config import RepetitionPolicy
from vllm_mlx.engine.sampling import RequestSampler
from vllm_mlx.engine.sequence import SampledToken, SequenceState, TextDecoder
from vllm_mlx.engine.types import (
    REPETITION_DETECTED,
    EngineEvent,
    Finished,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    SequenceFacts,
    TokenDelta,
    Usage,
)

EOS = 0
# Byte pieces: tokens 9 and 10 are the two halves of "é".
VOCAB: dict[int, bytes] = {
    EOS: b"",
    1: b"Hello",
    2: b" world",
    3: b"!",
    4: b" ST",
    5: b"OP",
    6: b" more",
    7: b"\n",
    8: b"<|x|>",
    9: b"\xc3",
    10: b"\xa9",
}
PROMPT = (1, 2, 3, 7, 1)


def decode(ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace")


class Recorder:
    def __init__(self) -> None:
        self.events: list[EngineEvent] = []

    def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)

    @property
    def deltas(self) -> list[TokenDelta]:
        return [e for e in self.events if isinstance(e, TokenDelta)]

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)

    @property
    def finished(self) -> Finished:
        finals = [e for e in self.events if isinstance(e, Finished)]
        assert len(finals) == 1
        assert self.events[-1] is finals[0]
        return finals[0]


def _seq(
    prompt: tuple[int, ...] = PROMPT,
    stream_interval: int = 1,
    context_length: int = 100,
    eos: frozenset[int] = frozenset({EOS}),
    repetition: RepetitionPolicy = RepetitionPolicy.OFF,
    **params: object,
) -> tuple[SequenceState, Recorder]:
    params.setdefault("max_tokens", 50)
    sampling = SamplingParams(**params)  # type: ignore[arg-type]
    request = GenerationRequest(
        request_id="r1", prompt_token_ids=prompt, sampling=sampling, repetition_policy=repetition
    )
    sink = Recorder()
    sampler = RequestSampler(sampling, prompt, len(VOCAB))
    state = SequenceState(
        request, sink, sampler, TextDecoder(decode, eos), stream_interval, context_length
    )
    return state, sink


def _feed(state: SequenceState, tokens: Sequence[int]) -> None:
    for t in tokens:
        assert not state.finished, "token fed after the sequence finished"
        state.append(SampledToken(t))


def test_plain_tokens_stream_one_delta_each() -> None:
    state, sink = _seq(max_tokens=3)
    _feed(state, [1, 2, 3])
    assert [(d.text, d.token_ids) for d in sink.deltas] == [
        ("Hello", (1,)),
        (" world", (2,)),
        ("!", (3,)),
    ]
    assert sink.finished == Finished(FinishReason.LENGTH, Usage(len(PROMPT), 3))


def test_the_final_event_carries_the_sequence_facts() -> None:
    state, sink = _seq(max_tokens=2)
    state.preempted = True
    state.running_at_admission, state.waiting_at_admission = 3, 1
    _feed(state, [1, 2])
    facts = SequenceFacts("miss", preempted=True, running_at_admission=3, waiting_at_admission=1)
    assert sink.finished.facts == facts


def test_eos_stops_and_is_not_emitted() -> None:
    state, sink = _seq()
    _feed(state, [1, 2, EOS])
    assert state.finished
    assert sink.text == "Hello world"
    assert all(EOS not in d.token_ids for d in sink.deltas)
    assert sink.finished.reason is FinishReason.STOP
    assert sink.finished.stop_sequence is None
    assert sink.finished.usage == Usage(len(PROMPT), 3)  # the EOS token counts


def test_extra_stop_token_id_stops() -> None:
    state, sink = _seq(stop_token_ids=(3,))
    _feed(state, [1, 3])
    assert sink.text == "Hello"
    assert sink.finished.reason is FinishReason.STOP


def test_eos_of_the_tokenizer_set() -> None:
    state, sink = _seq(eos=frozenset({EOS, 8}))
    _feed(state, [2, 8])
    assert sink.text == " world"
    assert sink.finished.reason is FinishReason.STOP


def test_ignore_eos_keeps_generating() -> None:
    state, sink = _seq(ignore_eos=True, max_tokens=4)
    _feed(state, [1, EOS, 2, EOS])
    assert sink.text == "Hello world"
    assert sink.finished.reason is FinishReason.LENGTH
    assert [t for d in sink.deltas for t in d.token_ids] == [1, EOS, 2, EOS]


@pytest.mark.parametrize("max_tokens", [1, 2, 7])
def test_max_tokens_gives_length(max_tokens: int) -> None:
    state, sink = _seq(max_tokens=max_tokens)
    tokens = [1, 2, 3, 6, 6, 6, 7][:max_tokens]
    _feed(state, tokens)
    assert state.finished
    assert sink.finished.reason is FinishReason.LENGTH
    assert sink.finished.usage.completion_tokens == max_tokens
    assert sink.text == decode(tokens)


def test_stop_string_across_tokens_is_never_emitted() -> None:
    state, sink = _seq(stop=("STOP",))
    _feed(state, [1, 4, 5])
    assert state.finished
    assert sink.text == "Hello "
    assert all("S" not in d.text for d in sink.deltas)
    assert sink.finished.reason is FinishReason.STOP
    assert sink.finished.stop_sequence == "STOP"
    assert sink.finished.usage.completion_tokens == 3


def test_partial_stop_is_released_when_it_does_not_complete() -> None:
    state, sink = _seq(stop=("STOP",))
    _feed(state, [4])
    assert sink.text == " "  # "ST" is held
    _feed(state, [6])
    assert sink.text == " ST more"


def test_partial_stop_is_released_at_length() -> None:
    state, sink = _seq(stop=("STOP",), max_tokens=2)
    _feed(state, [1, 4])
    assert sink.text == "Hello ST"
    assert sink.finished.reason is FinishReason.LENGTH
    assert sink.finished.stop_sequence is None


def test_earliest_of_several_stops() -> None:
    state, sink = _seq(stop=(" more", "world"))
    _feed(state, [1, 2])
    assert sink.text == "Hello "
    assert sink.finished.stop_sequence == "world"


def test_stream_interval_batches_deltas() -> None:
    state, sink = _seq(stream_interval=3, max_tokens=7)
    _feed(state, [1, 2, 3, 6, 6, 6, 7])
    assert [d.token_ids for d in sink.deltas] == [(1, 2, 3), (6, 6, 6), (7,)]
    assert [d.text for d in sink.deltas] == ["Hello world!", " more more more", "\n"]
    assert sink.finished.reason is FinishReason.LENGTH


def test_stream_interval_with_eos_flushes_the_rest() -> None:
    state, sink = _seq(stream_interval=3)
    _feed(state, [1, 2, 3, 6, EOS])
    assert [d.token_ids for d in sink.deltas] == [(1, 2, 3), (6,)]
    assert sink.text == "Hello world! more"


def test_context_window_gives_length() -> None:
    state, sink = _seq(context_length=len(PROMPT) + 3, max_tokens=100)
    _feed(state, [1, 2, 3])
    assert state.finished
    assert sink.finished.reason is FinishReason.LENGTH
    assert sink.finished.usage == Usage(len(PROMPT), 3)


def test_split_character_waits_for_its_second_byte() -> None:
    state, sink = _seq()
    _feed(state, [1, 9])
    assert sink.text == "Hello"
    _feed(state, [10, 3])
    assert sink.text == "Helloé!"
    assert all("\ufffd" not in d.text for d in sink.deltas)


def test_unfinished_character_is_flushed_at_the_end() -> None:
    state, sink = _seq(max_tokens=2)
    _feed(state, [1, 9])
    assert sink.text == "Hello\ufffd"


def test_abort_sends_one_final_event() -> None:
    state, sink = _seq(stop=("STOP",))
    _feed(state, [1, 4])
    state.finish(FinishReason.ABORT)
    state.finish(FinishReason.TIMEOUT)  # a second finish is ignored
    assert sink.finished == Finished(FinishReason.ABORT, Usage(len(PROMPT), 2))


def test_timeout_flushes_held_text() -> None:
    state, sink = _seq(stop=("STOP",))
    _feed(state, [1, 4])
    state.finish(FinishReason.TIMEOUT)
    assert sink.text == "Hello ST"
    assert sink.finished.reason is FinishReason.TIMEOUT


def test_timeout_before_any_token() -> None:
    state, sink = _seq()
    state.finish(FinishReason.TIMEOUT)
    assert sink.events == [Finished(FinishReason.TIMEOUT, Usage(len(PROMPT), 0))]


def test_logprobs_are_decoded_per_token() -> None:
    state, sink = _seq(logprobs=True, top_logprobs=2, max_tokens=2)
    state.append(SampledToken(1, -0.5, ((1, -0.5), (2, -1.5))))
    state.append(SampledToken(2, -0.25, ((2, -0.25), (6, -2.0))))
    lps = [lp for d in sink.deltas for lp in d.logprobs]
    assert [(lp.token_id, lp.token, lp.logprob) for lp in lps] == [
        (1, "Hello", -0.5),
        (2, " world", -0.25),
    ]
    assert [(t.token_id, t.token, t.logprob) for t in lps[0].top] == [
        (1, "Hello", -0.5),
        (2, " world", -1.5),
    ]


def test_first_token_time_is_recorded() -> None:
    state, _ = _seq()
    assert state.first_token_time is None
    _feed(state, [1])
    assert state.first_token_time is not None


def test_every_inter_token_gap_is_kept() -> None:
    state, _ = _seq(max_tokens=40)
    state.token_times.extend(float(t * t) for t in range(30))  # gaps 1, 3, 5, ...
    assert state.itls == tuple(float(2 * t + 1) for t in range(29))
    assert state.recent_itls == [float(2 * t + 1) for t in range(13, 29)]  # the latest 16
    _feed(state, [1, 2])
    assert len(state.itls) == 31


def test_each_delta_has_one_logprob_per_token() -> None:
    state, sink = _seq(logprobs=True)
    state.append(SampledToken(1, -0.5))
    state.append(SampledToken(EOS, -0.1))
    assert sink.finished.reason is FinishReason.STOP
    for delta in sink.deltas:
        assert len(delta.logprobs) == len(delta.token_ids)


# ---------------------------------------------------------------------------
# The repetition detector stops a looping sequence like a stop string would.


@pytest.mark.parametrize("stream_interval", [1, 4])
def test_safe_mode_stops_a_token_run(stream_interval: int) -> None:
    state, sink = _seq(stream_interval=stream_interval, repetition=RepetitionPolicy.SAFE)
    _feed(state, [1, *([6] * 8)])
    assert state.finished and state.loop_trigger == "token_run_len_8"
    assert sink.text == "Hello" + " more" * 8  # everything buffered is still sent
    assert sink.finished == Finished(
        FinishReason.STOP, Usage(len(PROMPT), 9), None, REPETITION_DETECTED, "token_run_len_8"
    )


def test_strict_mode_stops_a_pattern_loop() -> None:
    state, sink = _seq(repetition=RepetitionPolicy.STRICT)
    _feed(state, [1, *([2, 3] * 4)])
    assert sink.text == "Hello" + " world!" * 4
    assert sink.finished.reason is FinishReason.STOP
    assert sink.finished.stop_reason == REPETITION_DETECTED
    assert sink.finished.stop_reason_detail == "pattern_loop_len_2"


def test_a_held_stop_prefix_is_released_when_a_loop_stops() -> None:
    state, sink = _seq(repetition=RepetitionPolicy.STRICT, stop=(" more!",))
    _feed(state, [6] * 4)
    assert sink.text == " more" * 4
    assert sink.finished.stop_sequence is None
    assert sink.finished.stop_reason_detail == "token_run_len_4"


@pytest.mark.parametrize("repetition", [RepetitionPolicy.OFF, None])
def test_off_and_the_request_default_never_stop_a_loop(repetition: RepetitionPolicy | None) -> None:
    mode = {"repetition": repetition} if repetition is not None else {}
    state, sink = _seq(max_tokens=20, **mode)  # type: ignore[arg-type]
    _feed(state, [6] * 20)
    assert sink.finished.reason is FinishReason.LENGTH
    assert sink.finished.stop_reason is None and sink.finished.stop_reason_detail is None
    assert state.loop_trigger is None


def test_other_stops_carry_no_stop_reason() -> None:
    state, sink = _seq(repetition=RepetitionPolicy.STRICT, max_tokens=3)
    _feed(state, [1, 2, 3])
    assert sink.finished == Finished(FinishReason.LENGTH, Usage(len(PROMPT), 3))
