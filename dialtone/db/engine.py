"""Engine and session factories. SQLite runs in WAL mode with foreign keys on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from dialtone.config import Settings
from dialtone.db import sqlite


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across process crashes in WAL mode (only power loss can lose
    # the last commits), which is the guarantee we document.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(settings: Settings) -> AsyncEngine:
    # hide_parameters: SQLAlchemy otherwise copies a failing statement's bound values
    # (ciphertext, password and token hashes) into the exception text, and so into logs.
    if settings.is_sqlite:
        args, kwargs = SQLiteDialect_pysqlite().create_connect_args(make_url(settings.db_url))
        engine = create_async_engine(
            settings.db_url,
            # sqlite3's timeout is the busy timeout: how long to wait for another
            # writer's lock before giving up (and answering 503).
            async_creator=sqlite.connector(args, {**kwargs, "timeout": settings.db_timeout}),
            pool_size=8,
            max_overflow=8,
            pool_timeout=settings.db_timeout,
            hide_parameters=True,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        settings.db_url,
        pool_size=10,
        max_overflow=10,
        pool_timeout=settings.db_timeout,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"timeout": settings.db_timeout, "command_timeout": settings.db_timeout},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
