"""Admin credentials: the operator's X-Admin-Token, or an admin user's bearer token."""

from __future__ import annotations

from typing import Any

from litestar import Request

from dialtone.api.dependencies import resolve_caller
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Forbidden, Unauthorized
from dialtone.security.tokens import same_secret
from dialtone.services.context import Caller, ServerContext


async def require_admin_credentials(
    request: Request[Any, Any, Any],
    uow: UnitOfWork,
    ctx: ServerContext,
    *,
    moderators: bool = False,
) -> Caller | None:
    """None when the operator's admin token was given; the admin Caller otherwise.

    ``moderators``: a moderator's bearer token is accepted too (kicks, bans, deleting
    a member's messages); the service still keeps admins out of a moderator's reach.
    """
    given = request.headers.get("x-admin-token")
    if given is not None:
        expected = ctx.settings.admin_token
        if expected and same_secret(given.strip(), expected):
            return None
        raise Unauthorized("invalid admin token", code="invalid_admin_token")
    caller = await resolve_caller(request, uow)
    if caller is None:
        raise Unauthorized("admin token or admin bearer token required", code="unauthorized")
    if caller.is_admin or (moderators and caller.is_moderator):
        return caller
    if moderators:
        raise Forbidden("admins and moderators only", code="not_moderator")
    raise Forbidden("admin only", code="not_admin")


async def require_staff_credentials(
    request: Request[Any, Any, Any], uow: UnitOfWork, ctx: ServerContext
) -> Caller | None:
    return await require_admin_credentials(request, uow, ctx, moderators=True)
