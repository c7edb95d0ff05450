from __future__ import annotations

from typing import Any

from litestar import Request, post

from dialtone.api.dependencies import Ctx, Uow
from dialtone.api.guards import require_admin_credentials
from dialtone.schemas.common import rfc3339
from dialtone.schemas.invites import InviteOut
from dialtone.services.invites import InviteService


@post("/server/invites", status_code=201, tags=["invites"])
async def create_invite(request: Request[Any, Any, Any], uow: Uow, ctx: Ctx) -> InviteOut:
    await require_admin_credentials(request, uow, ctx)
    token, expires_at = await InviteService(uow, ctx).create()
    return InviteOut(token=token, expires_at=rfc3339(expires_at))
