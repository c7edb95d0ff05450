"""Reading an ASGI scope's request head: one header, the bearer token, the client address.

Shared by the HTTP edge, the Litestar dependencies and the WebSocket gateway, so
every transport reads credentials and addresses the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dialtone.security.addresses import Proxies, client_address, forwarded_for


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first value of header ``name`` (lower case, as ASGI servers pass names)."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def scope_address(scope: Mapping[str, Any], trusted: Proxies) -> str:
    """The caller's address: the peer, or X-Forwarded-For when the peer is a trusted proxy."""
    client = scope.get("client")
    peer = client[0] if client else None
    return client_address(peer, forwarded_for(scope.get("headers", ())), trusted)
