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
    request: Request[Any, Any, Any], uow: UnitOfWork, ctx: ServerContext
) -> Caller | None:
    """None when the operator's admin token was given; the admin Caller otherwise."""
    given = request.headers.get("x-admin-token")
    if given is not None:
        expected = ctx.settings.admin_token
        if expected and same_secret(given.strip(), expected):
            return None
        raise Unauthorized("invalid admin token", code="invalid_admin_token")
    caller = await resolve_caller(request, uow)
    if caller is None:
        raise Unauthorized("admin token or admin bearer token required", code="unauthorized")
    if not caller.is_admin:
        raise Forbidden("admin only", code="not_admin")
    return caller
