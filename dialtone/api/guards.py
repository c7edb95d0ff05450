"""Credentials, checked by Litestar guards before anything of the request is read.

Litestar runs a route's guards before it decodes the body or the parameters, so a
request without valid credentials is a 401 (and a member on an admin route a 403)
whatever its body: nobody learns a route's body rules, or has a body decoded, without
signing in. Each guard authenticates in a short transaction of its own and leaves its
answer in the scope for the handler: ``members`` the caller (``provide_caller``),
``admins`` and ``staff`` the admin actor (``admin_actor``).

Admin credentials: the operator's X-Admin-Token, or an admin user's bearer token.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from dialtone.api.dependencies import resolve_caller
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Forbidden, RateLimited, Unauthorized
from dialtone.security.addresses import limit_key
from dialtone.security.headers import scope_address
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
    connection: ASGIConnection[Any, Any, Any, Any], ctx: ServerContext, given: str
) -> None:
    client = scope_address(connection.scope, ctx.trusted_proxies)
    decision = await admin_token_attempt(ctx, client, given)
    if decision is None:
        return
    if not decision.allowed:
        raise RateLimited(
            "too many admin token attempts, try again later",
            retry_after=retry_after_seconds(decision),
        )
    raise Unauthorized("invalid admin token", code="invalid_admin_token")


async def require_admin_credentials(
    request: ASGIConnection[Any, Any, Any, Any],
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


# ---------------------------------------------------------------- guards

ADMIN_ACTOR = "dialtone.admin_actor"

Connection = ASGIConnection[Any, Any, Any, Any]


def _unit_of_work(connection: Connection) -> UnitOfWork:
    state = connection.app.state
    ctx: ServerContext = state.ctx
    return UnitOfWork(state.sessionmaker, state.publish, ctx.database_failed)


async def members(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard: a valid bearer token (401 otherwise); the caller goes to ``provide_caller``."""
    async with _unit_of_work(connection) as uow:
        caller = await resolve_caller(connection, uow)
    if caller is None:
        raise Unauthorized("missing or invalid bearer token", code="unauthorized")


async def _admin_guard(connection: Connection, *, moderators: bool) -> None:
    async with _unit_of_work(connection) as uow:
        actor = await require_admin_credentials(
            connection, uow, connection.app.state.ctx, moderators=moderators
        )
    connection.scope[ADMIN_ACTOR] = actor  # type: ignore[literal-required]


async def admins(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard: the operator's X-Admin-Token or an admin's bearer token."""
    await _admin_guard(connection, moderators=False)


async def staff(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard: as ``admins``, or a moderator's bearer token."""
    await _admin_guard(connection, moderators=True)


def admin_actor(request: Request[Any, Any, Any]) -> Caller | None:
    """What the ``admins`` or ``staff`` guard let through: None for the operator's
    token, else the admin (or moderator) calling."""
    scope: dict[str, Any] = request.scope  # type: ignore[assignment]
    if ADMIN_ACTOR not in scope:
        # A route that reads the actor without the guard: refuse, never serve it.
        raise Unauthorized("admin token or admin bearer token required", code="unauthorized")
    actor: Caller | None = scope[ADMIN_ACTOR]
    return actor
