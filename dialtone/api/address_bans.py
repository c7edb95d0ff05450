"""Banned addresses are refused at every HTTP request, before any handler runs.

An ASGI middleware inside the Litestar app. The client's address is the socket peer,
or X-Forwarded-For when the peer is one of DIALTONE_TRUSTED_PROXIES (the same rule
as everywhere else). A request carrying the operator's valid X-Admin-Token is never
refused, so a ban can never lock the operator out. The WebSocket handshake is checked
by the gateway, which also knows the user.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dialtone.api.guards import admin_token_attempt
from dialtone.security.headers import header, scope_address
from dialtone.services.context import ServerContext

ASGIApp = Any

_BODY = msgspec.json.encode({"error": "banned from this server", "code": "banned"})


async def is_operator(scope: dict[str, Any], ctx: ServerContext, client: str) -> bool:
    """A right X-Admin-Token, checked through the same per-address limit as the guard:
    otherwise a banned address could test guesses here without limit."""
    given = header(scope, b"x-admin-token")
    return given is not None and await admin_token_attempt(ctx, client, given) is None


def address_ban_middleware(ctx: ServerContext) -> Any:
    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            # The address is worked out only while some address is banned.
            client = (
                scope_address(scope, ctx.trusted_proxies)
                if scope["type"] == "http" and ctx.bans.has_address_bans
                else None
            )
            if (
                client is not None
                and ctx.bans.address_ban(client, ctx.clock()) is not None
                and not await is_operator(scope, ctx, client)
            ):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(_BODY)),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _BODY})
                return
            await app(scope, receive, send)

        return guarded

    return middleware
