"""Cluster-wide mutexes on PostgreSQL (session-level advisory locks).

Used when several nodes share one database: a channel's messages are stored and
published one at a time across the cluster, so every client sees storage order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import suppress

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession


def lock_key(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock``, stable across processes."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


class AdvisoryLockRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def acquire(self, name: str) -> None:
        await self.session.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(name)})

    async def release(self, name: str) -> None:
        await self.session.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(name)})


class HeldLocks:
    """Session-level advisory locks on a connection of their own, kept between uses.

    A session-level lock belongs to the database connection that took it. An ORM
    session hands its connection back to the pool when its transaction commits, so a
    lock taken through the session and released after the commit may be released on
    another connection (which fails) and stay held on the first, in the pool, blocking
    other nodes. Holding the locks on a dedicated autocommit connection keeps them
    independent of the transactions they guard, and costs one round trip to take a
    lock and one to release them all.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._holder: AsyncConnection | None = None

    async def acquire(self, names: Sequence[str]) -> None:
        """Take the locks in key order (so two holders cannot deadlock)."""
        if self._holder is None:
            conn = await self._engine.connect()
            self._holder = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for key in sorted({lock_key(name) for name in names}):
            await self._holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})

    async def release_all(self) -> None:
        if self._holder is not None:
            await self._holder.execute(text("SELECT pg_advisory_unlock_all()"))

    async def discard(self) -> None:
        """Drop the connection (ending its database session releases every lock)."""
        conn, self._holder = self._holder, None
        if conn is not None:
            with suppress(Exception):
                await conn.invalidate()
            with suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        conn, self._holder = self._holder, None
        if conn is not None:
            with suppress(Exception):
                await conn.close()
