"""The key backup scheme (docs/API.md, "Key backup"), as a second client implements it.

The page (dialtone/web/backup.js) and this module are independent implementations of one
format; tests make each open what the other made.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tests.e2ee import b64, unb64

INFO = b"dialtone-key-backup-v1"
PBKDF2_ITERATIONS = 600_000


class WrongSecret(Exception):
    """The recovery key or passphrase does not open this backup (the GCM tag failed)."""


def new_recovery_key() -> bytes:
    return os.urandom(32)


def format_recovery_key(raw: bytes) -> str:
    """Base32 (RFC 4648) without padding, upper case, in groups of four joined by "-"."""
    text = base64.b32encode(raw).decode("ascii").rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_recovery_key(text: str) -> bytes:
    """Case-insensitive; spaces and dashes ignored. ValueError unless it is 32 bytes."""
    compact = "".join(c for c in text if c not in " -\t\n").upper()
    try:
        raw = base64.b32decode(compact + "=" * (-len(compact) % 8))
    except binascii.Error:
        raise ValueError("not a recovery key") from None
    if len(raw) != 32:
        raise ValueError("not a recovery key")
    return raw


def hkdf_backup_key(ikm: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=INFO).derive(ikm)


def passphrase_ikm(passphrase: str, salt: bytes, iterations: int) -> bytes:
    normalised = unicodedata.normalize("NFKC", passphrase).encode("utf-8")
    return PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations
    ).derive(normalised)


@dataclass
class BackupKeys:
    """The plaintext of a backup: channel keys by channel and key version, and the
    directory key."""

    channels: dict[str, dict[str, bytes]] = field(default_factory=dict)
    directory: bytes | None = None

    def merge(self, other: BackupKeys) -> BackupKeys:
        """The union (per channel and version); ours wins where both hold one."""
        channels = {cid: dict(versions) for cid, versions in other.channels.items()}
        for cid, versions in self.channels.items():
            channels.setdefault(cid, {}).update(versions)
        return BackupKeys(channels, self.directory or other.directory)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "channels": {
                    cid: {v: b64(k) for v, k in versions.items()}
                    for cid, versions in self.channels.items()
                },
                "directory": None if self.directory is None else b64(self.directory),
            }
        ).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> BackupKeys:
        body: dict[str, Any] = json.loads(data.decode("utf-8"))
        channels = {
            str(cid): {str(v): unb64(k) for v, k in versions.items()}
            for cid, versions in body.get("channels", {}).items()
        }
        directory = body.get("directory")
        return cls(channels, None if directory is None else unb64(directory))


@dataclass(frozen=True)
class Secret:
    """What opens a backup: a recovery key (32 bytes) or a passphrase."""

    recovery_key: bytes | None = None
    passphrase: str | None = None


def _key_for(secret: Secret, header: dict[str, Any]) -> bytes:
    salt = unb64(header["salt"])
    if header["kdf"] == "recovery-key":
        if secret.recovery_key is None:
            raise WrongSecret("this backup opens with a recovery key")
        return hkdf_backup_key(secret.recovery_key, salt)
    if header["kdf"] == "pbkdf2-sha256":
        if secret.passphrase is None:
            raise WrongSecret("this backup opens with a passphrase")
        ikm = passphrase_ikm(secret.passphrase, salt, int(header["iterations"]))
        return hkdf_backup_key(ikm, salt)
    raise ValueError(f"unknown kdf {header['kdf']!r}")


def make_backup(keys: BackupKeys, secret: Secret, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The ``backup`` string of PUT /keys/backup."""
    salt = os.urandom(16)
    header: dict[str, Any] = {"v": 1, "salt": b64(salt)}
    if secret.recovery_key is not None:
        header["kdf"] = "recovery-key"
    else:
        header["kdf"] = "pbkdf2-sha256"
        header["iterations"] = iterations
    key = _key_for(secret, header)
    nonce = os.urandom(12)
    data = nonce + AESGCM(key).encrypt(nonce, keys.to_json(), None)
    document = {"v": 1, "kdf": header["kdf"], "salt": header["salt"]}
    if "iterations" in header:
        document["iterations"] = iterations
    document["data"] = b64(data)
    return b64(json.dumps(document).encode("utf-8"))


def header_of(backup: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(unb64(backup).decode("utf-8"))
    if header.get("v") != 1:
        raise ValueError("unknown backup format version")
    return header


def open_backup(backup: str, secret: Secret) -> BackupKeys:
    header = header_of(backup)
    key = _key_for(secret, header)
    raw = unb64(header["data"])
    try:
        plaintext = AESGCM(key).decrypt(raw[:12], raw[12:], None)
    except InvalidTag:
        raise WrongSecret("wrong recovery key") from None
    return BackupKeys.from_json(plaintext)
