"""Public-key validation. The server checks keys are X25519 values; it decrypts nothing."""

from __future__ import annotations

import base64
import binascii

from nacl.exceptions import TypeError as NaclTypeError
from nacl.public import PublicKey

KEY_BYTES = 32


def decode_public_key(value: str) -> bytes | None:
    """Standard base64 (padded) of exactly 32 bytes, accepted by PyNaCl as X25519; else None."""
    if len(value) != 44:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != KEY_BYTES or base64.b64encode(raw).decode("ascii") != value:
        return None
    try:
        PublicKey(raw)
    except (NaclTypeError, ValueError):
        return None
    # The all-zero point yields an all-zero shared secret with any private key.
    if raw == bytes(KEY_BYTES):
        return None
    return raw


def is_public_key(value: str) -> bool:
    return decode_public_key(value) is not None


COMMITMENT_BYTES = 32


def is_commitment(value: str) -> bool:
    """A key commitment as stored: canonical standard base64 (padded) of 32 bytes.

    The server cannot check it against a key (it never sees one); canonical text only,
    so that clients may compare commitments as strings."""
    if len(value) != 44:
        return False
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == COMMITMENT_BYTES and base64.b64encode(raw).decode("ascii") == value
