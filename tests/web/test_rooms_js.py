"""`node --test` runs the unit tests of rooms.js (issue 16: the sidebar's rooms and direct
messages, the /sync request and what its answer says is gone, blocked senders hidden).
Skipped when Node.js is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the rooms.js unit tests)")
def test_rooms_js_units() -> None:
    assert NODE is not None
    result = subprocess.run(
        [NODE, "--test", str(HERE / "rooms.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# pass 9" in result.stdout, result.stdout
