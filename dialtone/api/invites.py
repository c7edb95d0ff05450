from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post

from dialtone.api.dependencies import Ctx, Uow
from dialtone.api.guards import admin_actor, admins
from dialtone.errors import InvalidInput
from dialtone.schemas.admin import InviteCreateIn
from dialtone.schemas.common import rfc3339
from dialtone.schemas.invites import InviteOut
from dialtone.services.admin import AdminService

_decoder = msgspec.json.Decoder(InviteCreateIn)


@post("/server/invites", status_code=201, tags=["invites"], guards=[admins])
async def create_invite(request: Request[Any, Any, Any], uow: Uow, ctx: Ctx) -> InviteOut:
    """No body: today's single-use invite with the default lifetime. A JSON body
    ``{"ttl_seconds", "max_uses"}`` (both optional) sets either."""
    actor = admin_actor(request)
    raw = await request.body()
    options = InviteCreateIn()
    if raw.strip():
        try:
            options = _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"invalid invite options: {exc}", code="invalid_invite") from None
    token, invite = await AdminService(uow, ctx).create_invite(
        actor, options.ttl_seconds, options.max_uses
    )
    return InviteOut(
        token=token,
        expires_at=rfc3339(invite.expires_at),
        id=invite.id,
        max_uses=invite.max_uses,
    )
