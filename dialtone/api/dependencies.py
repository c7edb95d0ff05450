"""Per-request dependencies: one unit of work (transaction) and the authenticated caller."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from litestar import Request
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


async def resolve_caller(request: Request[object, object, State], uow: UnitOfWork) -> Caller | None:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        return None
    caller = await AuthService(uow, request.app.state.ctx).authenticate(token)
    if caller is not None:
        request.scope["dialtone_caller"] = caller  # type: ignore[typeddict-unknown-key]
    return caller


async def provide_caller(request: Request[object, object, State], uow: Uow) -> Caller:
    try:
        caller = await resolve_caller(request, uow)
        if caller is None:
            raise Unauthorized("missing or invalid bearer token", code="unauthorized")
    except BaseException:
        # Litestar never resumes dependencies resolved before one that raises, so the
        # unit of work would keep its pooled connection until garbage collection.
        await uow.close()
        raise
    return caller


# Handler parameter types for the app-level dependencies (Litestar wants them named).
Uow = NamedDependency[UnitOfWork]
Ctx = NamedDependency[ServerContext]
CallerDep = NamedDependency[Caller]
ClientDep = NamedDependency[str]
