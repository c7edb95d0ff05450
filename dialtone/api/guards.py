"""Admin credentials: the operator's X-Admin-Token, or an admin user's bearer token."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request

from dialtone.api.dependencies import provide_client, resolve_caller
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Forbidden, RateLimited, Unauthorized
from dialtone.security.addresses import limit_key
from dialtone.security.ratelimit import Decision, retry_after_seconds
from dialtone.security.tokens import same_secret
from dialtone.services.context import Caller, ServerContext

log = logging.getLogger("dialtone.security")


async def admin_token_attempt(ctx: ServerContext, client: str, given: str) -> Decision | None:
    """One X-Admin-Token attempt from ``client``: None when the token is right, else the
    limiter's decision (``allowed`` False: the address is over its limit, the token was
    not even compared, so a guess made while limited cannot tell right from wrong).

    Every attempt takes a token from the address's bucket before the comparison; a
    right one gives it back. Shared by the guard and the address-ban middleware (which
    lets the operator's token through), so neither is an unlimited oracle.
    """
    key = limit_key(client)
    decision = await ctx.limiter.hit("admin_token", key)
    if not decision.allowed:
        return decision
    expected = ctx.settings.admin_token
    if expected and same_secret(given.strip(), expected):
        await ctx.limiter.refund("admin_token", key)
        return None
    log.warning("wrong admin token", extra={"event": "admin_token_rejected", "client": client})
    return decision


async def _check_admin_token(
    request: Request[Any, Any, Any], ctx: ServerContext, given: str
) -> None:
    decision = await admin_token_attempt(ctx, await provide_client(request), given)
    if decision is None:
        return
    if not decision.allowed:
        raise RateLimited(
            "too many admin token attempts, try again later",
            retry_after=retry_after_seconds(decision),
        )
    raise Unauthorized("invalid admin token", code="invalid_admin_token")


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
        await _check_admin_token(request, ctx, given)
        return None
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
