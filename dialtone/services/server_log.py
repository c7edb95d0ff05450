"""The server log operators read at ``GET /admin/log`` (Drawpile's ``/log``).

Entries hold ids, addresses and text the server wrote itself: never a username,
password, token, invite, envelope or ciphertext (the callers pass ids only and
``message`` is always a fixed phrase). Two ways in:

- ``add(session, ...)``: in the caller's transaction, for changes an operator made
  (a ban is logged exactly when it is stored);
- ``record(...)``: buffered and written by a background task in its own transaction,
  for what happens on a failing path (a refused login rolls its transaction back)
  or on the hot path (sockets joining and leaving). ``flush()`` writes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.base import utcnow
from dialtone.db.models import ServerLogEntry

log = logging.getLogger("dialtone.server_log")

TOPICS = frozenset(
    {
        "login",
        "login_failed",
        "register",
        "join",
        "leave",
        "kick",
        "ban",
        "unban",
        "lock",
        "unlock",
        "flags",
        "message_deleted",
        "settings",
        "invite_created",
        "invite_revoked",
        "device_revoked",
        "sessions_revoked",
        "user_deleted",
        "announcement",
        "drain",
        "bad_data",
        "rate_limited",
    }
)

# Entries waiting for the writer beyond this are dropped (and counted): a flood of
# refused logins must not grow memory without bound while the database is away.
MAX_PENDING = 10_000
# A failed write is tried again after this many seconds.
RETRY_SECONDS = 1.0

_INSERT = insert(cast(Table, ServerLogEntry.__table__))


def entry(
    topic: str,
    at: datetime,
    *,
    message: str = "",
    level: str = "info",
    user_id: str | None = None,
    device_id: str | None = None,
    actor_id: str | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    assert topic in TOPICS, topic
    return {
        "at": at,
        "level": level,
        "topic": topic,
        "user_id": user_id,
        "device_id": device_id,
        "actor_id": actor_id,
        "address": address if address and address != "unknown" else None,
        "message": message,
    }


class ServerLog:
    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._pending: list[dict[str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self.dropped = 0
        self.failed_writes = 0  # counters for metrics

    async def add(self, session: AsyncSession, topic: str, **fields: Any) -> None:
        """Log in this transaction: the entry exists exactly if the change commits."""
        await session.execute(_INSERT, [entry(topic, self.clock(), **fields)])

    def record(self, topic: str, **fields: Any) -> None:
        """Log soon, in a transaction of its own (see the module docstring)."""
        if len(self._pending) >= MAX_PENDING:
            if not self.dropped:
                log.warning("server log entries dropped: the writer is behind (database away?)")
            self.dropped += 1
            return
        self._pending.append(entry(topic, self.clock(), **fields))
        if self._wake is not None:
            self._wake.set()

    async def flush(self) -> None:
        if not self._pending or self._sessionmaker is None:
            return
        rows, self._pending = self._pending, []
        try:
            async with self._sessionmaker() as session, session.begin():
                await session.execute(_INSERT, rows)
        except Exception:
            # Keep them for the next round (up to the cap), newest first to go.
            self._pending = (rows + self._pending)[:MAX_PENDING]
            raise

    async def run(
        self, sessionmaker: async_sessionmaker[AsyncSession], stop: asyncio.Event
    ) -> None:
        """Write buffered entries as they come, until ``stop``; a last flush then.

        A write that fails (database away, disk full) keeps its entries and is retried
        every RETRY_SECONDS without waiting for a new entry, so what was logged during
        the fault is written once it passes; only MAX_PENDING are kept, and what is
        lost (over that, or still unwritten at shutdown) is counted and reported."""
        self._sessionmaker = sessionmaker
        self._wake = wake = asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        failures = 0
        try:
            while not stop.is_set():
                if not self._pending:
                    waking = asyncio.ensure_future(wake.wait())
                    await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    waking.cancel()
                wake.clear()
                try:
                    await self.flush()
                except Exception as exc:
                    self.failed_writes += 1
                    if not failures:
                        log.warning(
                            "server log write failed; entries kept and retried",
                            extra={"error": type(exc).__name__, "pending": len(self._pending)},
                        )
                    failures += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RETRY_SECONDS)
                    continue
                if failures:
                    log.info(
                        "server log written again",
                        extra={"failed_attempts": failures, "dropped": self.dropped},
                    )
                    failures = 0
            try:
                await self.flush()
            except Exception as exc:
                log.error(
                    "server log entries lost at shutdown",
                    extra={"error": type(exc).__name__, "lost": len(self._pending)},
                )
        finally:
            stopping.cancel()
