"""`node --test` runs the unit tests of files.js (file encryption, picture sniffing, the
JSON body of a message with attachments) and checks both ways against an independent
Python implementation of the client convention (docs/API.md, "Files"). Skipped when
Node.js is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.e2ee import b64, unb64

HERE = Path(__file__).parent
NODE = shutil.which("node")
PNG = bytes.fromhex("89504e470d0a1a0a") + os.urandom(300)


def seal_bytes(key: bytes, plain: bytes) -> bytes:
    """The file convention: nonce(12) ‖ ciphertext ‖ tag(16), raw bytes."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plain, None)


def open_bytes(key: bytes, sealed: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], None)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the files.js unit tests)")
def test_files_js_matches_python(tmp_path: Path) -> None:
    assert NODE is not None
    plains = [PNG, b"", os.urandom(100_000), "ünïcødé ✓".encode()]
    vector_files = []
    for i, plain in enumerate(plains):
        key = os.urandom(32)
        vector_files.append(
            {
                "key": b64(key),
                "sealed": b64(seal_bytes(key, plain)),
                "plain": b64(plain),
                "name": f"file {i}.bin",
                "type": "application/octet-stream",
            }
        )
    attachments = [f"id-{i}" for i in range(len(plains))]
    text = "files from Python ✓"
    body = json.dumps(
        {
            "v": 1,
            "text": text,
            "files": [
                {"id": fid, "key": f["key"], "name": f["name"], "type": f["type"], "size": len(p)}
                for fid, f, p in zip(attachments, vector_files, plains, strict=True)
            ],
        }
    )
    channel_key = os.urandom(32)
    vectors = {
        "files": vector_files,
        "attachments": attachments,
        "text": text,
        "body": body,
        "channel_key": b64(channel_key),
        "channel_image": b64(seal_bytes(channel_key, PNG)),
    }
    (tmp_path / "vectors.json").write_text(json.dumps(vectors))
    env = {
        **os.environ,
        "DIALTONE_VECTORS": str(tmp_path / "vectors.json"),
        "DIALTONE_VECTORS_OUT": str(tmp_path / "out.json"),
    }
    result = subprocess.run(
        [NODE, "--test", str(HERE / "files.test.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# pass 6" in result.stdout, result.stdout

    out = json.loads((tmp_path / "out.json").read_text())
    for sealed_by_js in out["files"]:
        sealed = unb64(sealed_by_js["sealed"])
        assert open_bytes(unb64(sealed_by_js["key"]), sealed) == unb64(sealed_by_js["plain"])
        assert len(sealed) == len(unb64(sealed_by_js["plain"])) + 28
    built = json.loads(out["body"])
    assert built["v"] == 1
    assert built["text"] == text
    assert [f["id"] for f in built["files"]] == attachments
    assert [f["key"] for f in built["files"]] == [f["key"] for f in vector_files]
    assert [f["size"] for f in built["files"]] == [len(p) for p in plains]
    assert open_bytes(channel_key, unb64(out["channel_image"])) == PNG
