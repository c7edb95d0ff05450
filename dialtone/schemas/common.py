"""Bounded string types shared by the wire Structs, and the timestamp format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

# Text columns on PostgreSQL cannot hold NUL, and nothing legitimate contains one.
_NO_NUL = r"^[^\x00]*$"

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)]
Username = Annotated[str, msgspec.Meta(max_length=256, pattern=_NO_NUL)]
Password = Annotated[str, msgspec.Meta(max_length=1024, pattern=_NO_NUL)]
PublicKeyText = Annotated[str, msgspec.Meta(max_length=128, pattern=_NO_NUL)]
InviteToken = Annotated[str, msgspec.Meta(max_length=256, pattern=_NO_NUL)]
# Ciphertext as the clients send it (base64 today); the server never reads it.
NameCipher = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=_NO_NUL)]
# A key commitment (44 characters); checked by security.keys.is_commitment, so a malformed
# one gets its own code (invalid_commitment) rather than the generic one of a bad body.
Commitment = Annotated[str, msgspec.Meta(max_length=256, pattern=_NO_NUL)]
Envelope = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=_NO_NUL)]
# A client's own id for one send (a UUID, say): printable ASCII, no spaces.
ClientMessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
MAX_BODY_BYTES = 16 * 1024
MessageBody = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_BODY_BYTES, pattern=_NO_NUL)]


def trimmed(value: str, name: str) -> str:
    """Surrounding whitespace removed; refused when nothing is left (as the reference
    server does). Raised from ``__post_init__``, a ValueError becomes msgspec's
    ValidationError: 400 over HTTP, an ``invalid_message`` error event over /ws."""
    value = value.strip()
    if not value:
        raise ValueError(f"{name} must not be empty or only whitespace")
    return value


class Status(msgspec.Struct):
    status: str = "ok"


def rfc3339(moment: datetime) -> str:
    """UTC, microseconds, ``Z`` suffix: ``2026-11-22T14:20:17.123456Z``."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is C code; strftime with %f is several times slower (history pages
    # format fifty of these). Same text for years 1000 and later.
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"
