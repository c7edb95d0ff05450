"""One paging scheme for every admin list: ``limit`` plus an opaque ``cursor``.

A page answers ``next_cursor`` (null on the last page); passing it back as
``cursor`` continues exactly after the last item seen, whatever was added meanwhile.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from dialtone.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_CursorParts = list[str | int]
# Integer parts (sequence numbers, log ids) are 64-bit columns: a crafted cursor with
# a bigger number would reach the database and fail there, not here.
_INT64 = range(-(2**63), 2**63)


def page_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if limit < 1:
        raise InvalidInput("limit must be a positive number", code="invalid_limit")
    return min(limit, MAX_LIMIT)


def encode_cursor(*parts: str | int) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(parts))).decode().rstrip("=")


def decode_cursor(cursor: str, shape: tuple[type, ...]) -> _CursorParts:
    """The parts of a cursor made by ``encode_cursor``; a 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = msgspec.json.decode(raw, type=_CursorParts)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad_cursor() from None
    if len(parts) != len(shape) or not all(
        isinstance(p, t) and not isinstance(p, bool) for p, t in zip(parts, shape, strict=True)
    ):
        raise _bad_cursor()
    if any(isinstance(p, int) and p not in _INT64 for p in parts):
        raise _bad_cursor()
    return parts


def _bad_cursor() -> InvalidInput:
    return InvalidInput("cursor is not one this server gave out", code="invalid_cursor")
