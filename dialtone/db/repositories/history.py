"""History's reads through the database driver itself, for the history fast path.

SQLAlchemy's async adapters turn one statement into several hand-offs to the driver
(on SQLite each is a trip to aiosqlite's thread and back: cursor, execute, fetch,
close), and its execute path (compiled cache, result processing) costs more than the
query. The fast path (``dialtone.api.history_fast``) holds a pooled connection from
the engine and runs these statements with the driver's own one-call reads:
aiosqlite's ``execute_fetchall`` (one trip to its thread) and asyncpg's ``fetch``
(one round trip, a prepared statement cached by asyncpg).

Both drivers are reached through SQLAlchemy's public ``driver_connection``. Their
exceptions are not SQLAlchemy's: the caller treats any exception as "answer this
request the ordinary way" and invalidates the connection.

The statements are those of ``MessageRepository`` (messages.py), written out per
driver; tests/perf/test_history_paths.py checks that both give the same rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dialtone.db.repositories.messages import StoredMessage


class _Statements(NamedTuple):
    newest: str
    newest_before: str
    oldest_after: str
    seq_of: str
    channel_exists: str
    seq_at: str


# Parameters, in order: newest (channel_id, limit); newest_before and oldest_after
# (channel_id, seq, limit); seq_of (channel_id, message_id); channel_exists (channel_id).
# sent_at comes back as RFC 3339 text, written by the database as messages.py does.
_SQLITE = _Statements(
    newest="SELECT id, sender_id, sender_name_enc, body, replace(sent_at, ' ', 'T') || 'Z', "
    "channel_seq, client_message_id, key_version, attachments "
    "FROM channel_messages WHERE channel_id = ? AND deleted_at IS NULL "
    "ORDER BY seq DESC LIMIT ?",
    newest_before="SELECT id, sender_id, sender_name_enc, body, "
    "replace(sent_at, ' ', 'T') || 'Z', channel_seq, client_message_id, key_version, attachments "
    "FROM channel_messages WHERE channel_id = ? AND deleted_at IS NULL AND seq < ? "
    "ORDER BY seq DESC LIMIT ?",
    oldest_after="SELECT id, sender_id, sender_name_enc, body, replace(sent_at, ' ', 'T') || 'Z', "
    "channel_seq, client_message_id, key_version, attachments "
    "FROM channel_messages WHERE channel_id = ? AND deleted_at IS NULL AND seq > ? "
    "ORDER BY seq LIMIT ?",
    seq_of="SELECT seq FROM channel_messages WHERE channel_id = ? AND id = ?",
    channel_exists="SELECT 1 FROM channels WHERE id = ?",
    seq_at="SELECT seq FROM channel_messages WHERE channel_id = ? AND channel_seq <= ? "
    "ORDER BY channel_seq DESC LIMIT 1",
)
_PG_SENT_AT = """to_char(sent_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_POSTGRES = _Statements(
    newest="SELECT id, sender_id, sender_name_enc, body, " + _PG_SENT_AT + ", "
    "channel_seq, client_message_id, key_version, attachments "
    "FROM channel_messages WHERE channel_id = $1 AND deleted_at IS NULL "
    "ORDER BY seq DESC LIMIT $2",
    newest_before="SELECT id, sender_id, sender_name_enc, body, " + _PG_SENT_AT + ", "
    "channel_seq, client_message_id, key_version, attachments "
    "FROM channel_messages WHERE channel_id = $1 AND deleted_at IS NULL AND seq < $2 "
    "ORDER BY seq DESC LIMIT $3",
    oldest_after="SELECT id, sender_id, sender_name_enc, body, " + _PG_SENT_AT + ", "
    "channel_seq, client_message_id, key_version, attachments "
    "FROM channel_messages WHERE channel_id = $1 AND deleted_at IS NULL AND seq > $2 "
    "ORDER BY seq LIMIT $3",
    seq_of="SELECT seq FROM channel_messages WHERE channel_id = $1 AND id = $2",
    channel_exists="SELECT 1 FROM channels WHERE id = $1",
    seq_at="SELECT seq FROM channel_messages WHERE channel_id = $1 AND channel_seq <= $2 "
    "ORDER BY channel_seq DESC LIMIT 1",
)


class DriverHistory:
    """The reads of one history page on one driver connection (aiosqlite or asyncpg)."""

    def __init__(self, driver: Any, dialect: str) -> None:
        self._driver = driver
        self._sqlite = dialect == "sqlite"
        self._sql = _SQLITE if self._sqlite else _POSTGRES

    @staticmethod
    def supports(dialect: str) -> bool:
        return dialect in ("sqlite", "postgresql")

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        if self._sqlite:
            return list(await self._driver.execute_fetchall(sql, args))
        return list(await self._driver.fetch(sql, *args))

    async def seq_of(self, channel_id: str, message_id: str) -> int | None:
        rows = await self._fetch(self._sql.seq_of, channel_id, message_id)
        return int(rows[0][0]) if rows else None

    async def channel_exists(self, channel_id: str) -> bool:
        return bool(await self._fetch(self._sql.channel_exists, channel_id))

    async def seq_at(self, channel_id: str, channel_seq: int) -> int:
        rows = await self._fetch(self._sql.seq_at, channel_id, channel_seq)
        return int(rows[0][0]) if rows else 0

    async def page(
        self,
        channel_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages, oldest first, in one statement (the fast path takes
        only pages that fit in one of ``MessageRepository``'s chunks)."""
        if after_seq is not None:
            rows = await self._fetch(self._sql.oldest_after, channel_id, after_seq, limit)
            return list(map(StoredMessage._make, rows))
        if before_seq is not None:
            rows = await self._fetch(self._sql.newest_before, channel_id, before_seq, limit)
        else:
            rows = await self._fetch(self._sql.newest, channel_id, limit)
        page = list(map(StoredMessage._make, rows))
        page.reverse()
        return page
