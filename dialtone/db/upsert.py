"""One-statement upserts (``INSERT … ON CONFLICT``) in the dialect of the session's database.

SQLAlchemy offers ``on_conflict_do_update`` for SQLite and PostgreSQL through each
dialect's own ``insert``; repositories pick theirs here, so a create-or-replace is one
statement that two simultaneous requests cannot both lose.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

Upsert = postgresql.Insert | sqlite.Insert


class ReferenceGone(Exception):
    """A row this write refers to (a channel, a device) was deleted by a concurrent request."""


def upsert(session: AsyncSession, table: Any) -> Upsert:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"
