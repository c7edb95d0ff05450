"""`node --test` runs the unit tests of keyring.js and of the parts of rotation.js that
need no browser storage (issue 16: a channel key per version, hand-on of every version to
a private room's members). Skipped when Node.js is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the keyring.js unit tests)")
def test_keyring_js_units() -> None:
    assert NODE is not None
    result = subprocess.run(
        [NODE, "--test", str(HERE / "keyring.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# pass 12" in result.stdout, result.stdout
