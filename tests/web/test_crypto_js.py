"""`node --test` runs the browser's crypto and key backup modules against vectors from the
Python scheme, and Python opens what they sealed. Skipped when Node.js is not installed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2ee import DeviceKeys, b64, open_sealed, pairwise_key, seal
from tests.key_backup import BackupKeys, Secret, format_recovery_key, make_backup, open_backup

HERE = Path(__file__).parent


def commitment(key: bytes) -> str:
    """The key commitment of docs/API.md, computed here independently of the page."""
    return b64(hmac.new(key, b"dialtone-key-commitment-v1", hashlib.sha256).digest())


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the crypto.js unit tests)")
def test_crypto_js_matches_the_python_scheme(tmp_path: Path) -> None:
    python_side, node_side = DeviceKeys(), DeviceKeys()
    channel_key = os.urandom(32)
    messages = [
        [seal(channel_key, text.encode()), text]
        for text in ("hello", "ünïcødé ✓ 🫖", "x" * 5000, " leading and trailing ")
    ]
    pairwise = pairwise_key(bytes(python_side.private), bytes(node_side.private.public_key))
    vectors = {
        "python_public": python_side.public_b64,
        "node_private": b64(bytes(node_side.private)),
        "node_public": node_side.public_b64,
        "pairwise_plaintext": "sealed with the pairwise key",
        "pairwise_sealed": seal(pairwise, b"sealed with the pairwise key"),
        "envelope": python_side.wrap_for(node_side.public_b64, channel_key),
        "messages": messages,
        "key_b64": b64(channel_key),
        "commitment": commitment(channel_key),
    }
    (tmp_path / "vectors.json").write_text(json.dumps(vectors))
    env = {
        **os.environ,
        "DIALTONE_VECTORS": str(tmp_path / "vectors.json"),
        "DIALTONE_VECTORS_OUT": str(tmp_path / "out.json"),
    }
    result = subprocess.run(
        [NODE, "--test", str(HERE / "crypto.test.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# skipped 0" in result.stdout, result.stdout

    out = json.loads((tmp_path / "out.json").read_text())
    assert open_sealed(channel_key, out["sealed"]).decode() == "from node ✓"
    assert python_side.unwrap_from(node_side.public_b64, out["envelope"]) == channel_key
    assert python_side.unwrap_from(out["fresh_public"], out["fresh_envelope"]) == channel_key
    new_key = python_side.unwrap_from(node_side.public_b64, out["new_key_envelope"])
    assert open_sealed(new_key, out["new_key_sealed"]) == b"a brand new channel"
    shared = python_side.unwrap_from(node_side.public_b64, out["shared_envelope"])
    assert out["shared_commitment"] == commitment(shared)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the backup.js unit tests)")
def test_backup_js_matches_the_python_scheme(tmp_path: Path) -> None:
    raw = os.urandom(32)
    channels = {"ch-1": {"1": os.urandom(32)}, "ch-2": {"1": os.urandom(32)}}
    keys = BackupKeys(channels, os.urandom(32))
    # NFKC: the page and Python must agree on what a passphrase is.
    passphrase = "\ufb01ve mock turtles, \u00fcn\u00efc\u00f8d\u00e9"
    commitment_key = os.urandom(32)
    vectors = {
        "recovery_raw": b64(raw),
        "recovery_text": format_recovery_key(raw),
        "recovery_blob": make_backup(keys, Secret(recovery_key=raw)),
        "passphrase": passphrase,
        "passphrase_blob": make_backup(keys, Secret(passphrase=passphrase)),
        "plaintext": json.loads(keys.to_json()),
        "commitment_key": b64(commitment_key),
        "commitment": b64(
            hmac.new(commitment_key, b"dialtone-key-commitment-v1", hashlib.sha256).digest()
        ),
    }
    (tmp_path / "vectors.json").write_text(json.dumps(vectors))
    env = {
        **os.environ,
        "DIALTONE_VECTORS": str(tmp_path / "vectors.json"),
        "DIALTONE_VECTORS_OUT": str(tmp_path / "out.json"),
    }
    result = subprocess.run(
        [NODE, "--test", str(HERE / "backup.test.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# skipped 0" in result.stdout, result.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    assert open_backup(out["recovery_blob"], Secret(recovery_key=raw)) == keys
    assert open_backup(out["passphrase_blob"], Secret(passphrase=passphrase)) == keys
    header = json.loads(base64.b64decode(out["passphrase_blob"]))
    assert (header["kdf"], header["iterations"]) == ("pbkdf2-sha256", 600_000)
