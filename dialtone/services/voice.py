"""Short-lived TURN credentials in coturn's REST scheme, so no user types a shared password."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from dialtone.errors import NotFound
from dialtone.services.context import Caller, ServerContext


@dataclass
class TurnCredentials:
    username: str
    credential: str
    ttl: int
    uris: list[str]


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class VoiceService:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def turn_credentials(self, caller: Caller) -> TurnCredentials:
        settings = self.ctx.settings
        if not settings.turn_secret or not settings.turn_uris:
            raise NotFound("TURN is not configured on this server", code="turn_not_configured")
        expiry = int(self.ctx.clock().timestamp()) + settings.turn_ttl
        username = f"{expiry}:{caller.user_id}"
        return TurnCredentials(
            username=username,
            credential=turn_credential(settings.turn_secret, username),
            ttl=settings.turn_ttl,
            uris=list(settings.turn_uris),
        )
