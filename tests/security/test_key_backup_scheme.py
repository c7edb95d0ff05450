"""The key backup scheme of tests/key_backup.py against fixed vectors and its own rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

import pytest

from tests.key_backup import (
    BackupKeys,
    Secret,
    WrongSecret,
    format_recovery_key,
    hkdf_backup_key,
    make_backup,
    open_backup,
    parse_recovery_key,
    passphrase_ikm,
)


def test_recovery_key_format_round_trips_and_is_forgiving() -> None:
    raw = bytes(range(32))
    text = format_recovery_key(raw)
    groups = text.split("-")
    assert len(text.replace("-", "")) == 52
    assert all(len(g) == 4 for g in groups)
    assert text == text.upper()
    assert text.startswith("AAAQ-EAYE-AUDA-OCAJ")
    assert parse_recovery_key(text) == raw
    assert parse_recovery_key(text.lower().replace("-", " ")) == raw
    assert parse_recovery_key(text.replace("-", "")) == raw
    with pytest.raises(ValueError, match="not a recovery key"):
        parse_recovery_key(text[:-4])
    with pytest.raises(ValueError, match="not a recovery key"):
        parse_recovery_key("1" * 52)


def test_derivations_match_known_vectors() -> None:
    # HKDF (RFC 5869) computed independently with hmac: our parameters are SHA-256, the
    # salt, the info label and one 32-byte block.
    ikm, salt = bytes(32), bytes(range(16))
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm = hmac.new(prk, b"dialtone-key-backup-v1" + b"\x01", hashlib.sha256).digest()
    assert hkdf_backup_key(ikm, salt) == okm
    assert passphrase_ikm("pass", salt, 1000) == hashlib.pbkdf2_hmac("sha256", b"pass", salt, 1000)
    # NFKC: the ligature "ﬁ" and "fi" are one passphrase.
    assert passphrase_ikm("\ufb01ve", salt, 10) == passphrase_ikm("five", salt, 10)


def test_make_and_open_with_a_recovery_key_and_a_passphrase() -> None:
    keys = BackupKeys({"ch1": {"1": os.urandom(32)}}, os.urandom(32))
    secret = Secret(recovery_key=os.urandom(32))
    sealed = make_backup(keys, secret)
    header = json.loads(base64.b64decode(sealed))
    assert (header["v"], header["kdf"]) == (1, "recovery-key")
    assert "iterations" not in header
    assert len(base64.b64decode(header["salt"])) == 16
    assert open_backup(sealed, secret) == keys
    with pytest.raises(WrongSecret, match="wrong recovery key"):
        open_backup(sealed, Secret(recovery_key=os.urandom(32)))

    words = Secret(passphrase="correct horse battery staple")
    sealed = make_backup(keys, words, iterations=1000)
    header = json.loads(base64.b64decode(sealed))
    assert (header["kdf"], header["iterations"]) == ("pbkdf2-sha256", 1000)
    assert open_backup(sealed, words) == keys
    with pytest.raises(WrongSecret):
        open_backup(sealed, Secret(passphrase="correct horse battery stapler"))


def test_merge_is_a_union_per_channel_and_version() -> None:
    a, b, c = os.urandom(32), os.urandom(32), os.urandom(32)
    mine = BackupKeys({"x": {"1": a}}, None)
    theirs = BackupKeys({"x": {"2": b}, "y": {"1": c}}, c)
    merged = mine.merge(theirs)
    assert merged.channels == {"x": {"1": a, "2": b}, "y": {"1": c}}
    assert merged.directory == c
    assert theirs.merge(mine).channels == merged.channels
