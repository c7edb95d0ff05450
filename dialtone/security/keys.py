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
