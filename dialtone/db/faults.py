"""Which database errors mean "the database is away or cannot store" (answered 503),
and a watch over the engine that notices when writes fail for want of storage.

Drivers are not imported here (SQLAlchemy's dialects load them): an error is told by
SQLAlchemy's class, by the SQLSTATE PostgreSQL sends (asyncpg and SQLAlchemy's
adapter both carry it as ``sqlstate``), or by SQLite's error code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("dialtone.db")

# SQLSTATE classes of a database that is away, refusing or out of resources:
# 08 connection exception, 53 insufficient resources (disk full, out of memory, too
# many connections), 57 operator intervention (shutting down, "the database system is
# starting up", a statement cancelled by statement_timeout), 58 system error (I/O).
UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
# Writes failing for want of storage: disk full, I/O error.
STORAGE_STATES = frozenset({"53100", "58030"})
# SQLite's primary result codes for the same (extended codes keep them in the low byte).
SQLITE_IOERR = 10
SQLITE_FULL = 13
# Driver classes (by name, so no driver is imported) of a connection that is gone.
_GONE = frozenset({"InterfaceError", "PostgresConnectionError", "ConnectionDoesNotExistError"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver error it wraps, and its causes (each once)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend((current.__cause__, current.__context__))
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def is_unavailable(exc: BaseException) -> bool:
    """A fault of the database's availability, not of the request: answered 503."""
    for current in _chain(exc):
        if isinstance(
            current,
            OperationalError | InterfaceError | PoolTimeout | TimeoutError | ConnectionError,
        ):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        state = _sqlstate(current)
        if state is not None and state.startswith(UNAVAILABLE_CLASSES):
            return True
        if any(kind.__name__ in _GONE for kind in type(current).__mro__):
            return True
        if is_storage_failure(current):
            return True
    return False


def is_storage_failure(exc: BaseException) -> bool:
    """A write refused for want of storage (disk full, I/O error)."""
    for current in _chain(exc):
        if _sqlstate(current) in STORAGE_STATES:
            return True
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in (SQLITE_FULL, SQLITE_IOERR):
            return True
    return False


class StorageWatch:
    """Notices, through the engine's public ``handle_error`` event, every statement or
    commit that failed for want of storage. Readiness holds the node out of rotation for
    ``hold`` seconds after the last one: a readiness probe's small write can succeed on
    a full disk (PostgreSQL may rewrite a row in place) while real writes fail."""

    def __init__(self, hold: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold = hold
        self.clock = clock
        self.last_failure: float | None = None
        self.failures = 0  # a counter for metrics

    def attach(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "handle_error", self.on_error)

    def on_error(self, context: ExceptionContext) -> None:
        if is_storage_failure(context.original_exception):
            self.note_failure()

    def note_failure(self) -> None:
        if not self.failing:
            log.warning("database writes failing for want of storage (disk full?)")
        self.failures += 1
        self.last_failure = self.clock()

    @property
    def failing(self) -> bool:
        return self.last_failure is not None and self.clock() - self.last_failure < self.hold
