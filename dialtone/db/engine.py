"""Engine and session factories. SQLite runs in WAL mode with foreign keys on.

SQLite goes through SQLAlchemy's aiosqlite dialect as published: each pooled
connection is an aiosqlite connection with its own thread, opened with
``sqlite3.connect``'s ``timeout`` (the busy timeout). In WAL mode a reader never
waits for a writer, so a read on one pooled connection does not queue behind a
write on another; a writer waits up to the busy timeout for another writer's lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolResetState

from dialtone.config import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across process crashes in WAL mode (only power loss can lose
    # the last commits), which is the guarantee we document.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """The pool's reset on check-in, as its default (a rollback) but only when there is
    something to roll back: each rollback is a trip to aiosqlite's thread, and a read
    outside a transaction (the history fast path) leaves none open. SQLAlchemy's own
    Connection and Session end theirs before check-in (``transaction_was_reset``)."""
    if not state.asyncio_safe or state.transaction_was_reset:
        return
    if dbapi_connection.driver_connection.in_transaction:
        dbapi_connection.rollback()


def create_engine(settings: Settings) -> AsyncEngine:
    # hide_parameters: SQLAlchemy otherwise copies a failing statement's bound values
    # (ciphertext, password and token hashes) into the exception text, and so into logs.
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.db_url,
            # sqlite3's timeout is the busy timeout: how long to wait for another
            # writer's lock before giving up (and answering 503).
            connect_args={"timeout": settings.db_timeout},
            # Named, not left to the dialect (which chose NullPool before SQLAlchemy
            # 2.0.38: a new connection and thread per checkout).
            poolclass=AsyncAdaptedQueuePool,
            # As many kept connections as requests commonly in flight: a connection
            # opened beyond pool_size is closed again at check-in, and opening one here
            # starts a thread (churned per request, it cost more than the request).
            pool_size=16,
            max_overflow=16,
            pool_timeout=settings.db_timeout,
            # Reset by _sqlite_reset: a rollback only when a transaction is open.
            pool_reset_on_return=None,
            hide_parameters=True,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "reset", _sqlite_reset)
        return engine
    engine = create_async_engine(
        settings.db_url,
        # Up to 20 connections, all kept once opened (overflow ones are closed at
        # check-in, so traffic above pool_size paid a new PostgreSQL backend per request).
        pool_size=20,
        max_overflow=0,
        pool_timeout=settings.db_timeout,
        hide_parameters=True,
        connect_args={"timeout": settings.db_timeout, "command_timeout": settings.db_timeout},
    )
    event.listen(engine.sync_engine, "checkout", _replace_closed)
    return engine


def _replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Liveness on checkout without a round trip (``pool_pre_ping`` costs three with
    asyncpg: BEGIN, a query, ROLLBACK). When PostgreSQL ends a connection (a restart,
    ``pg_terminate_backend``, an idle timeout) the socket's end is read by the event loop
    and asyncpg marks the connection closed; the pool then replaces it before use
    (raising DisconnectionError is the pool's documented way to ask for that)."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
