"""Per-request dependencies: one unit of work (transaction) and the authenticated caller."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency

from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Unauthorized
from dialtone.security.headers import bearer_token, scope_address
from dialtone.services.auth import AuthService
from dialtone.services.context import Caller, ServerContext


async def provide_ctx(state: State) -> ServerContext:
    ctx: ServerContext = state.ctx
    return ctx


async def provide_client(request: Request[object, object, State]) -> str:
    """The caller's address (X-Forwarded-For only from DIALTONE_TRUSTED_PROXIES)."""
    ctx: ServerContext = request.app.state.ctx
    return scope_address(request.scope, ctx.trusted_proxies)


async def provide_uow(state: State, ctx: Ctx) -> AsyncGenerator[UnitOfWork, None]:
    """Commit when the handler succeeds, roll back when it raises; publish after commit.

    ``ctx`` is taken only so that Litestar resolves it before, not beside, the unit of
    work: it resolves independent dependencies concurrently in an anyio task group,
    which cost more per request than a history query.
    """
    uow = UnitOfWork(state.sessionmaker, state.publish, ctx.database_failed)
    async with uow:
        yield uow


# Where a guard leaves the caller it authenticated (the access log reads it too).
CALLER = "dialtone_caller"


async def resolve_caller(
    connection: ASGIConnection[Any, Any, Any, Any], uow: UnitOfWork
) -> Caller | None:
    token = bearer_token(connection.headers.get("authorization"))
    if token is None:
        return None
    caller = await AuthService(uow, connection.app.state.ctx).authenticate(token)
    if caller is not None:
        connection.scope[CALLER] = caller  # type: ignore[literal-required]
    return caller


async def provide_caller(request: Request[object, object, State]) -> Caller:
    """The caller the ``members`` guard (dialtone.api.guards) authenticated. The guard
    runs before Litestar reads the body; a route that takes this dependency without
    the guard is refused (401) rather than served without credentials."""
    caller: Caller | None = request.scope.get(CALLER)  # type: ignore[assignment]
    if caller is None:
        raise Unauthorized("missing or invalid bearer token", code="unauthorized")
    return caller


# Handler parameter types for the app-level dependencies (Litestar wants them named).
Uow = NamedDependency[UnitOfWork]
Ctx = NamedDependency[ServerContext]
CallerDep = NamedDependency[Caller]
ClientDep = NamedDependency[str]
