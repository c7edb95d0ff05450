"""A leaner aiosqlite connection: reads on the event loop, one thread hop per write.

SQLAlchemy's aiosqlite adapter drives every statement as cursor(), execute(),
fetchall() and close(), and aiosqlite runs each of those as a separate hop to the
connection's thread and back: on a busy machine the queueing and GIL hand-offs cost
several times what SQLite spends on a small query. Here:

- a SELECT runs directly on the event loop. Dialtone's reads are bounded and
  indexed (tens of microseconds), and in WAL mode a reader never waits for a
  writer's lock, so this blocks the loop less than a hand-off would;
- any other statement runs, rows fetched, in one hop to the connection's thread,
  where SQLite may wait for the write lock (busy_timeout) without stalling the loop;
- commit() and rollback() skip the hop when no transaction is open: Python's
  sqlite3 opens one only before a write, so read-only requests, and the pool's
  reset after a commit, cost nothing.

The worker thread, its queue, close() and stop() are aiosqlite's own.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiosqlite

Description = tuple[tuple[Any, ...], ...] | None
Outcome = tuple[Description, int, int | None, list[Any]]


def _is_read(sql: str) -> bool:
    return sql[:6].upper() == "SELECT" or sql.lstrip()[:6].upper() == "SELECT"


def _run(conn: sqlite3.Connection, sql: str, parameters: Any) -> Outcome:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description is not None else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _run_many(conn: sqlite3.Connection, sql: str, parameters: Iterable[Any]) -> Outcome:
    cursor = conn.cursor()
    try:
        cursor.executemany(sql, parameters)
        return None, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


class BufferedCursor:
    """The aiosqlite cursor interface SQLAlchemy uses, with rows fetched up front."""

    arraysize = 1

    def __init__(self, connection: FastConnection) -> None:
        self._connection = connection
        self._rows: deque[Any] = deque()
        self.description: Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    def _store(self, outcome: Outcome) -> BufferedCursor:
        self.description, self.rowcount, self.lastrowid, rows = outcome
        self._rows = deque(rows)
        return self

    async def execute(self, sql: str, parameters: Any = None) -> BufferedCursor:
        conn = self._connection._conn
        if _is_read(sql):
            return self._store(_run(conn, sql, parameters or ()))
        return self._store(await self._connection.in_thread(_run, conn, sql, parameters or ()))

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> BufferedCursor:
        conn = self._connection._conn
        return self._store(await self._connection.in_thread(_run_many, conn, sql, parameters))

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()

    async def __aenter__(self) -> BufferedCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class FastConnection(aiosqlite.Connection):
    async def in_thread(self, function: Callable[..., Outcome], *args: Any) -> Outcome:
        result: Outcome = await self._execute(function, *args)  # type: ignore[no-untyped-call]
        return result

    def cursor(self) -> BufferedCursor:  # type: ignore[override]
        return BufferedCursor(self)

    def _idle(self) -> bool:
        # Only read between statements (SQLAlchemy runs one at a time per connection),
        # so the worker thread is not touching the connection; in_transaction has no
        # same-thread check.
        conn = self._connection
        return conn is not None and not conn.in_transaction

    async def commit(self) -> None:
        if not self._idle():
            await super().commit()

    async def rollback(self) -> None:
        if not self._idle():
            await super().rollback()


def connector(
    args: Sequence[Any], kwargs: dict[str, Any]
) -> Callable[[], Awaitable[FastConnection]]:
    """An ``async_creator`` for create_async_engine: sqlite3.connect(*args, **kwargs)."""

    async def connect() -> FastConnection:
        connection = FastConnection(lambda: sqlite3.connect(*args, **kwargs), iter_chunk_size=64)
        await connection  # starts the worker thread and opens the database there
        return connection

    return connect
