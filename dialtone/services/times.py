"""The one parser of the times a client gives (query parameters, bodies, cursors)."""

from __future__ import annotations

from datetime import UTC, datetime

from dialtone.errors import InvalidInput


def parse_time(text: str, name: str) -> datetime:
    """An RFC 3339 time with its zone, as aware UTC; a 400 ``invalid_time`` otherwise.

    Normalised here, once: a time near the ends of the calendar with an offset
    (``9999-12-31T23:59:59-01:00``) has no UTC equivalent that Python can hold, and
    converting it later (a comparison, the database column) raised OverflowError.
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be an RFC 3339 time", code="invalid_time") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} needs a time zone (e.g. Z)", code="invalid_time")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{name} is out of range (years 0001 to 9999 in UTC)", code="invalid_time"
        ) from None
