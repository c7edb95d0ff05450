"""Whether this node should get traffic (``GET /health/ready``), and what works only in part.

Not ready (503) when the node cannot store: the database does not answer, or a write
fails (the check's own, or real writes failing for want of storage, seen by
``dialtone.db.faults.StorageWatch``). Ready but degraded (200, ``degraded`` names the
part) when only cross-node delivery (Redis) is down: logins, history and storing still
work there, and a balancer that dropped every node for it would take the whole cluster
down. See docs/OPERATIONS.md for what a balancer does with each.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.config import Settings
from dialtone.db.base import utcnow
from dialtone.db.faults import StorageWatch, is_storage_failure
from dialtone.db.repositories.health import HealthProbeRepository

log = logging.getLogger("dialtone.health")

# Redis answers a ping within this, or cross-node delivery counts as down.
REDIS_TIMEOUT = 2.0

DATABASE_DOWN = "database unavailable"
STORAGE_FAILING = "storage failing"


@dataclass
class Report:
    problem: str | None = None  # why not ready; None: ready
    degraded: list[str] = field(default_factory=list)


class Readiness:
    def __init__(self, settings: Settings, storage: StorageWatch) -> None:
        self.settings = settings
        self.storage = storage
        self.node = f"{socket.gethostname()}:{settings.port}"[:64]
        self._probe: asyncio.Future[str | None] | None = None
        self.degraded: frozenset[str] = frozenset()
        # Counters for metrics.
        self.not_ready_total = 0
        self.degraded_total = 0

    async def check(self, sessionmaker: async_sessionmaker[AsyncSession]) -> Report:
        problem = await self._storage(sessionmaker)
        if problem is not None:
            self.not_ready_total += 1
            return Report(problem)
        degraded = [] if await self._redis_ok() else ["redis"]
        self._note_degraded(frozenset(degraded))
        return Report(None, degraded)

    async def _storage(self, sessionmaker: async_sessionmaker[AsyncSession]) -> str | None:
        # Polls that arrive while a write check runs share it: several balancers polling
        # at once cost one write, not one each.
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._write_check(sessionmaker))
        problem = await asyncio.shield(self._probe)
        if problem is not None:
            return problem
        # Real writes failed lately although the check's own write passed.
        return STORAGE_FAILING if self.storage.failing else None

    async def _write_check(self, sessionmaker: async_sessionmaker[AsyncSession]) -> str | None:
        try:
            async with asyncio.timeout(self.settings.db_timeout):
                async with sessionmaker() as session, session.begin():
                    await HealthProbeRepository(session).touch(self.node, utcnow())
        except Exception as exc:
            log.warning("readiness: database write check failed: %s", type(exc).__name__)
            if is_storage_failure(exc):
                self.storage.note_failure()
                return STORAGE_FAILING
            return DATABASE_DOWN
        return None

    async def _redis_ok(self) -> bool:
        url = self.settings.redis_url
        if not url:
            return True
        import redis.asyncio as redis

        client: Any = redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        try:
            await client.ping()
            return True
        except Exception as exc:
            if "redis" not in self.degraded:
                log.warning("readiness: redis check failed: %s", type(exc).__name__)
            return False
        finally:
            await client.aclose()

    def _note_degraded(self, degraded: frozenset[str]) -> None:
        if degraded and degraded != self.degraded:
            self.degraded_total += 1
            log.warning(
                "ready but degraded: %s down, cross-node delivery stopped",
                ", ".join(sorted(degraded)),
                extra={"event": "degraded", "degraded": sorted(degraded)},
            )
        elif self.degraded and not degraded:
            log.info("no longer degraded: %s back", ", ".join(sorted(self.degraded)))
        self.degraded = degraded
