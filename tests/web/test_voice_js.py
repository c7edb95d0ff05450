"""`node --test` runs the unit tests of voice.js's browser-free parts (room presence, ICE
servers from GET /voice/turn, candidate parsing, new-connection detection, the speaking
meter). Skipped when Node.js is not installed; the browser tests cover the calls
themselves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the voice.js unit tests)")
def test_voice_js_units() -> None:
    assert NODE is not None
    result = subprocess.run(
        [NODE, "--test", str(HERE / "voice.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# pass 6" in result.stdout, result.stdout
