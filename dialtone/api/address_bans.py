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

from dialtone.security.headers import header, scope_address
from dialtone.security.tokens import same_secret
from dialtone.services.context import ServerContext

ASGIApp = Any

_BODY = msgspec.json.encode({"error": "banned from this server", "code": "banned"})


def is_operator(scope: dict[str, Any], ctx: ServerContext) -> bool:
    given = header(scope, b"x-admin-token")
    expected = ctx.settings.admin_token
    return bool(given and expected and same_secret(given.strip(), expected))


def address_ban_middleware(ctx: ServerContext) -> Any:
    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if (
                scope["type"] == "http"
                and ctx.bans.has_address_bans
                and ctx.bans.address_ban(scope_address(scope, ctx.trusted_proxies), ctx.clock())
                is not None
                and not is_operator(scope, ctx)
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
