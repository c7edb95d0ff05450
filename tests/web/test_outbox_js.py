"""`node --test` runs the unit tests of outbox.js (sends kept until acknowledged and sent
again after a reconnect; holes in a channel's `seq` numbering). Skipped when Node.js is
not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the outbox.js unit tests)")
def test_outbox_js_units() -> None:
    assert NODE is not None
    result = subprocess.run(
        [NODE, "--test", str(HERE / "outbox.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# pass 5" in result.stdout, result.stdout
