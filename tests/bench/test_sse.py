"""SSE parsing: split reads, merged reads, comments, multi-line data, [DONE]."""

from __future__ import annotations

import pytest

from vllm_mlx.bench.sse import DONE, SSEParser

STREAM = 'data: {"a": 1}\n\ndata: {"b": 2}\n\n: keep-alive\n\ndata: [DONE]\n\n'


def _feed_all(parts: list[str]) -> list[str]:
    parser = SSEParser()
    events = [event for part in parts for event in parser.feed(part)]
    return events + parser.flush()


def test_one_read_with_several_events() -> None:
    assert _feed_all([STREAM]) == ['{"a": 1}', '{"b": 2}', DONE]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_events_split_across_reads(size: int) -> None:
    parts = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert _feed_all(parts) == ['{"a": 1}', '{"b": 2}', DONE]


def test_event_is_emitted_only_when_its_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed('data: {"x"') == []
    assert parser.feed(": 1}\n") == []
    assert parser.feed("\n") == ['{"x": 1}']


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_endings(newline: str) -> None:
    text = STREAM.replace("\n", newline)
    assert _feed_all(list(text)) == ['{"a": 1}', '{"b": 2}', DONE]


def test_multi_line_data_is_joined_and_other_fields_ignored() -> None:
    text = "event: message\nid: 7\ndata: first\ndata:second\nretry: 10\n\n"
    assert _feed_all([text]) == ["first\nsecond"]


def test_flush_returns_an_unterminated_final_event() -> None:
    assert _feed_all(["data: [DONE]"]) == [DONE]
    assert _feed_all(["data: [DONE]\r"]) == [DONE]
    assert _feed_all([""]) == []
