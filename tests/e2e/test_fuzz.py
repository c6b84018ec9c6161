"""A short run of ``make fuzz``: schemathesis on every route of a live tiny-model server.

The acceptance run (200 cases per operation, >= 2,000 requests) is ``make fuzz``;
this one asks for 40 per operation (about 1,900 requests with schemathesis'
coverage phase, half a minute) through the same script.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures.server import REPO_ROOT


@pytest.mark.slow
def test_short_fuzz_finds_no_server_error() -> None:
    cmd = [sys.executable, "scripts/fuzz.py", "--max-examples", "40", "--min-requests", "1500"]
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    assert "0 were >= 500" in output, output[-8000:]
