"""One transaction per request (or per WebSocket frame); events leave only after commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# A transaction that ends with one of these ended because of the database, not a rule.
# (asyncpg lets a refused connection through as ConnectionRefusedError.)
DATABASE_FAULTS = (DBAPIError, PoolTimeout, ConnectionError, TimeoutError)

Publish = Callable[[list[Any]], Awaitable[None]]


class UnitOfWork:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publish: Publish,
        on_database_error: Callable[[], None] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._publish = publish
        # Told when the transaction ends with the database failing (not with a business
        # error): whatever was cached from the database can no longer be vouched for.
        self._on_database_error = on_database_error
        self._session: AsyncSession | None = None
        self.events: list[Any] = []
        self._on_end: list[Callable[[], None]] = []
        self._after_commit: list[Callable[[], Awaitable[None]]] = []
        self._after_rollback: list[Callable[[], Awaitable[None]]] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._sessionmaker()
        return self._session

    def emit(self, event: Any) -> None:
        """Queue an event; it is published only if the transaction commits."""
        self.events.append(event)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, when the current transaction has committed or rolled back
        (before the events are published)."""
        self._on_end.append(callback)

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` once the transaction has committed (never on a rollback),
        before the events are published: e.g. removing files whose rows it deleted."""
        self._after_commit.append(callback)

    def after_rollback(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` if the transaction rolls back (or its commit fails): e.g.
        removing a stored file whose row never made it."""
        self._after_rollback.append(callback)

    def _ended(self) -> None:
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback()

    async def commit(self) -> None:
        if self._session is not None:
            try:
                await self._session.commit()
            except BaseException:
                await self._rolled_back()
                raise
        self._ended()
        self._after_rollback = []
        after, self._after_commit = self._after_commit, []
        for callback in after:
            await callback()
        events, self.events = self.events, []
        if events:
            await self._publish(events)

    async def release_connection(self) -> None:
        """End a read-only stretch: the connection goes back to the pool while the caller
        does slow work that needs no database (a password hash); the next statement
        begins a new transaction. Only between reads: anything flushed would be committed.
        """
        if self._session is not None:
            await self._session.commit()
        self._ended()

    async def _rolled_back(self) -> None:
        self._after_commit.clear()
        callbacks, self._after_rollback = self._after_rollback, []
        for callback in callbacks:
            await callback()

    async def rollback(self) -> None:
        self.events.clear()
        try:
            if self._session is not None:
                await self._session.rollback()
        finally:
            self._ended()
            await self._rolled_back()

    async def close(self) -> None:
        try:
            if self._session is not None:
                await self._session.close()
                self._session = None
        finally:
            self._ended()

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.commit()
            else:
                if self._on_database_error is not None and isinstance(exc, DATABASE_FAULTS):
                    self._on_database_error()
                await self.rollback()
        finally:
            await self.close()
