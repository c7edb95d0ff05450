"""`node --test` runs the unit tests of keyring.js and rotation.js (issue 16: a channel key
per version, hand-on of every version to a private room's members, the rotation an
owner's page makes, older versions checked against their commitments), with real
WebCrypto and a fake server. Skipped when Node.js is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the keyring.js unit tests)")
@pytest.mark.parametrize(("name", "count"), [("keyring", 12), ("rotation", 6)])
def test_keyring_and_rotation_js_units(name: str, count: int) -> None:
    assert NODE is not None
    result = subprocess.run(
        [NODE, "--test", str(HERE / f"{name}.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert f"# pass {count}" in result.stdout, result.stdout
