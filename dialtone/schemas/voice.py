from __future__ import annotations

import msgspec


class TurnCredentialsOut(msgspec.Struct):
    """coturn REST-API credentials (``use-auth-secret``): valid until the expiry in ``username``."""

    username: str
    credential: str
    ttl: int
    uris: list[str]
