"""Bearer-token resolution without a database query on every request.

A resolved token is remembered for a few seconds. Correctness comes first: any
statement that deletes or changes sessions, devices or users (logout, device
revocation, a user's flags) empties the cache as it runs, keeps it empty and
refuses new entries until its transaction has ended, and empties it again then. A
lookup that raced with such a change cannot store its stale answer: it was read
under an older epoch. So a revoked token stops working on this node as soon as the
revocation commits, whatever code path revoked it.

Only a single node can rely on this (another node's revocation never passes through
this process), so the app enables the cache only when no Redis broker is configured;
the TTL bounds what a change made outside the server (another process writing the
database) can leave behind.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from dialtone.services.context import Caller

# Statements that can end a session or change what a Caller says (flags).
# UPDATE devices is left out: logins touch last_seen_at, which no Caller holds.
_AUTH_CHANGE = re.compile(
    r'\s*(?:DELETE\s+FROM\s+"?(?:sessions|devices|users)|UPDATE\s+"?(?:sessions|users))"?(?:\s|$)',
    re.IGNORECASE,
)
_FLAG = "dialtone_auth_change"


def changes_auth(statement: str) -> bool:
    return _AUTH_CHANGE.match(statement) is not None


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
        self._open_changes: set[int] = set()
        self._watching = False
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
        # Unwatched, the cache would never hear of a revocation: it stays empty.
        if epoch != self.epoch or self._open_changes or not self._watching:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token_hash] = (caller, expires_at, self._monotonic() + self.ttl)

    def invalidate(self) -> None:
        self.epoch += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------ engine hooks

    def watch(self, engine: AsyncEngine) -> None:
        """Invalidate on every auth-changing statement run through ``engine``."""
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", self._before_execute)
        event.listen(sync_engine.pool, "checkin", self._transaction_over)
        event.listen(sync_engine.pool, "invalidate", self._transaction_over)
        self._watching = True

    def _before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any, **__: Any) -> None:
        if not changes_auth(statement):
            return
        conn.info[_FLAG] = True
        self._open_changes.add(id(conn.info))
        self.invalidate()

    def _transaction_over(self, _dbapi_connection: Any, record: Any, *_: Any) -> None:
        # The pool takes a connection back only after its transaction was committed or
        # rolled back, so whatever it changed is now what the database answers.
        if record.info.pop(_FLAG, False):
            self._open_changes.discard(id(record.info))
            self.invalidate()
