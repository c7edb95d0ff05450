"""Cluster-wide mutexes on PostgreSQL (session-level advisory locks).

Used when several nodes share one database: a channel's messages are stored and
published one at a time across the cluster, so every client sees storage order.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


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
