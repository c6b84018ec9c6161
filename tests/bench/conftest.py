"""The fake OpenAI server fixture shared by the bench tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bench.fake_server import FakeServer, run_fake_server


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A fake streaming server with /v1/status on a free port (see fake_server.py)."""
    with run_fake_server() as server:
        yield server
