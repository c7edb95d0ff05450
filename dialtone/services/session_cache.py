"""Bearer-token resolution without a database query on every request.

A resolved token is remembered for a few seconds. Correctness comes first: a service
that ends sessions or changes what a Caller says (logout, device revocation, a
user's flags) calls ``ServerContext.sessions_changing(uow)`` before it writes. That
empties the cache, keeps it empty and refuses new entries until the unit of work's
transaction has ended, and empties it again then. A lookup that raced with such a
change cannot store its stale answer: it was read under an older epoch. So a revoked
token stops working on this node as soon as the revocation commits.

Only a single node can rely on this (another node's revocation never passes through
this process), so the app enables the cache only when no Redis broker is configured;
the TTL bounds what a change made outside the services (another process writing the
database, ``dialtone`` CLI commands) can leave behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dialtone.db.unit_of_work import UnitOfWork
    from dialtone.services.context import Caller


class SessionCache:
    def __init__(
        self,
        ttl: float = 5.0,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[str, tuple[Caller, datetime, float]] = {}
        self._open_changes = 0
        self.epoch = 0

    def get(self, token_hash: str, now: datetime) -> Caller | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        caller, expires_at, stale_at = entry
        if expires_at <= now or stale_at <= self._monotonic():
            del self._entries[token_hash]
            return None
        return caller

    def put(self, token_hash: str, caller: Caller, expires_at: datetime, epoch: int) -> None:
        """Remember a lookup read from the database under ``epoch`` (read it before querying)."""
        if epoch != self.epoch or self._open_changes:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token_hash] = (caller, expires_at, self._monotonic() + self.ttl)

    def invalidate(self) -> None:
        self.epoch += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------ told by the services

    def changing(self, uow: UnitOfWork) -> None:
        """A write in ``uow`` is about to end sessions or change a user's flags."""
        self._open_changes += 1
        self.invalidate()
        uow.on_end(self._change_over)

    def _change_over(self) -> None:
        # The transaction has committed or rolled back: what it changed (if anything)
        # is now what the database answers.
        self._open_changes -= 1
        self.invalidate()
