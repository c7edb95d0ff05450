from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import ChannelMessage


class StoredMessage(NamedTuple):
    """A message as history returns it: plain columns, no ORM instance to build per row,
    and ``sent_at`` already as RFC 3339 text (``2026-11-22T14:20:17.123456Z``)."""

    id: str
    sender_id: str
    sender_name_enc: str
    body: str
    sent_at: str
    seq: int | None  # channel_seq: the message's place in its channel
    client_message_id: str | None
    key_version: int  # the channel key version the body is sealed with
    attachments: str | None  # file ids joined by commas (issue 17)


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, message: ChannelMessage) -> ChannelMessage:
        self.session.add(message)
        await self.session.flush()
        return message

    async def add_many(self, messages: Sequence[ChannelMessage]) -> None:
        self.session.add_all(messages)
        await self.session.flush()

    async def insert_many(self, rows: Sequence[dict[str, object]]) -> None:
        """Insert plain rows, in this order, with one executemany (no ORM objects).

        ``seq`` is assigned by the database in the order given: storage order.
        """
        if rows:
            await self.session.execute(_INSERT, list(rows))

    async def by_client_ids(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], ChannelMessage]:
        """The stored messages of these (sender, client_message_id) pairs, in one query."""
        if not keys:
            return {}
        result = await self.session.execute(
            select(ChannelMessage).where(
                ChannelMessage.sender_id.in_({sender for sender, _ in keys}),
                ChannelMessage.client_message_id.in_({client_id for _, client_id in keys}),
            )
        )
        found = {(m.sender_id, m.client_message_id or ""): m for m in result.scalars()}
        return {key: found[key] for key in keys if key in found}

    async def seq_at(self, channel_id: str, channel_seq: int) -> int:
        """The cursor (global ``seq``) just after the channel's message ``channel_seq``:
        that of its last message numbered ``channel_seq`` or lower, 0 when there is none.
        Within a channel both numbers grow together (the writer numbers a channel's
        messages under its row lock, and inserts them in that order)."""
        result = await self.session.execute(_SEQ_AT, {"channel_id": channel_id, "n": channel_seq})
        return int(result.scalar_one_or_none() or 0)

    async def seq_of(self, channel_id: str, message_id: str) -> int | None:
        result = await self.session.execute(
            select(ChannelMessage.seq).where(
                ChannelMessage.id == message_id, ChannelMessage.channel_id == channel_id
            )
        )
        return result.scalar_one_or_none()

    async def page(
        self,
        channel_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages, oldest first.

        Without a cursor: the newest. ``before_seq``: the newest ones older than it.
        ``after_seq``: the oldest ones newer than it (catching up after a reconnect).

        Read ``PAGE_CHUNK`` rows at a time: SQLite reads run on the event loop (see
        db/sqlite.py), and a full page of large messages read at once held every other
        request up for tens of milliseconds. Between chunks the loop serves the others.
        """
        if after_seq is not None:
            rows: list[StoredMessage] = []
            seq: int | None = after_seq
            while seq is not None:
                want = min(PAGE_CHUNK, limit - len(rows))
                chunk = await self._chunk(channel_id, want, after_seq=seq)
                rows.extend(chunk)
                if len(chunk) < want or len(rows) >= limit:
                    break
                seq = await self._next_cursor(channel_id, chunk[-1].id)
            return rows
        chunks: list[list[StoredMessage]] = []
        taken = 0
        seq = before_seq
        while True:
            want = min(PAGE_CHUNK, limit - taken)
            chunk = await self._chunk(channel_id, want, before_seq=seq)
            chunks.append(chunk)
            taken += len(chunk)
            if len(chunk) < want or taken >= limit:
                break
            seq = await self._next_cursor(channel_id, chunk[0].id)
            if seq is None:
                break
        if len(chunks) == 1:
            return chunks[0]
        return [row for chunk in reversed(chunks) for row in chunk]

    async def _next_cursor(self, channel_id: str, message_id: str) -> int | None:
        seq = await self.seq_of(channel_id, message_id)
        await asyncio.sleep(0)  # let other requests run between chunks
        return seq

    async def _chunk(
        self,
        channel_id: str,
        limit: int,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> list[StoredMessage]:
        """One statement's worth of ``page``, oldest first."""
        params: dict[str, object] = {"channel_id": channel_id, "limit": limit}
        # Core statements on the session's connection (same transaction): the ORM's
        # execute path (compile state, loading) costs more than the query itself.
        conn = await self.session.connection()
        pages = _PAGES[conn.dialect.name]  # the two databases Dialtone runs on
        if after_seq is not None:
            result = await conn.execute(pages.oldest_after, {**params, "seq": after_seq})
            return list(map(StoredMessage._make, result))
        if before_seq is not None:
            result = await conn.execute(pages.newest_before, {**params, "seq": before_seq})
        else:
            result = await conn.execute(pages.newest, params)
        rows = list(map(StoredMessage._make, result))
        rows.reverse()
        return rows


_SEQ_AT = (
    select(ChannelMessage.seq)
    .where(
        ChannelMessage.channel_id == bindparam("channel_id"),
        ChannelMessage.channel_seq <= bindparam("n"),
    )
    .order_by(ChannelMessage.channel_seq.desc())
    .limit(1)
)

# Rows per statement when a history page is read (a page may hold up to 500).
PAGE_CHUNK = 100


class Tombstone(NamedTuple):
    """A deleted message: what the deletions feed tells clients that were away."""

    seq: int
    id: str
    channel_id: str
    sender_id: str
    sent_at: datetime
    deleted_at: datetime
    deleted_by: str | None


class MessageModeration:
    """Deleting messages for good (tombstones) and the feed of deletions."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, message_id: str) -> ChannelMessage | None:
        result = await self.session.execute(
            select(ChannelMessage).where(ChannelMessage.id == message_id)
        )
        return result.scalar_one_or_none()

    async def erase(
        self,
        *,
        by: str,
        now: datetime,
        message_id: str | None = None,
        sender_id: str | None = None,
        channel_id: str | None = None,
    ) -> list[tuple[str, str]]:
        """Empty the ciphertext and mark the rows deleted, in one statement; returns the
        (id, channel_id) of the messages this call deleted (not those already gone)."""
        statement = (
            update(ChannelMessage)
            .where(ChannelMessage.deleted_at.is_(None))
            .values(body="", sender_name_enc="", deleted_at=now, deleted_by=by)
            .returning(ChannelMessage.id, ChannelMessage.channel_id)
        )
        if message_id is not None:
            statement = statement.where(ChannelMessage.id == message_id)
        if sender_id is not None:
            statement = statement.where(ChannelMessage.sender_id == sender_id)
        if channel_id is not None:
            statement = statement.where(ChannelMessage.channel_id == channel_id)
        if self.session.get_bind().dialect.name == "sqlite":
            # Overwrite freed space with zeros so the ciphertext leaves the file too
            # (per connection; harmless for everything else it later runs).
            await self.session.execute(text_pragma_secure_delete)
        result = await self.session.execute(statement)
        return [(row[0], row[1]) for row in result]

    async def deletions(
        self,
        channel_id: str,
        since: datetime | None,
        limit: int,
        after: tuple[datetime, int] | None,
    ) -> list[Tombstone]:
        """Deletions in a channel, oldest first, from ``since`` on."""
        query = (
            select(*[getattr(ChannelMessage, name) for name in Tombstone._fields])
            .where(ChannelMessage.channel_id == channel_id, ChannelMessage.deleted_at.is_not(None))
            .order_by(ChannelMessage.deleted_at, ChannelMessage.seq)
            .limit(limit)
        )
        if since is not None:
            query = query.where(ChannelMessage.deleted_at >= since)
        if after is not None:
            at, seq = after
            query = query.where(
                or_(
                    ChannelMessage.deleted_at > at,
                    and_(ChannelMessage.deleted_at == at, ChannelMessage.seq > seq),
                )
            )
        result = await self.session.execute(query)
        return list(map(Tombstone._make, result))

    async def count(self) -> int:
        result = await self.session.execute(
            select(func.count())
            .select_from(ChannelMessage)
            .where(ChannelMessage.deleted_at.is_(None))
        )
        return int(result.scalar_one())

    async def count_sent_since(self, moment: datetime, cap: int) -> int:
        """Messages sent since ``moment`` (deleted ones too), counted among the newest
        ``cap`` only: ``seq`` grows with time, so this walks the primary key backwards
        instead of scanning the table (``sent_at`` has no index)."""
        newest = (
            select(ChannelMessage.sent_at).order_by(ChannelMessage.seq.desc()).limit(cap).subquery()
        )
        result = await self.session.execute(
            select(func.count()).select_from(newest).where(newest.c.sent_at >= moment)
        )
        return int(result.scalar_one())

    async def purge_older_than(self, moment: datetime) -> int:
        """Message retention: drop messages (tombstones too) sent before ``moment``."""
        if self.session.get_bind().dialect.name == "sqlite":
            await self.session.execute(text_pragma_secure_delete)
        result = await self.session.execute(
            delete(ChannelMessage).where(ChannelMessage.sent_at < moment)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


text_pragma_secure_delete = text("PRAGMA secure_delete = ON")

# Core insert on the table: the ORM's unit of work costs more than SQLite's insert.
_INSERT = insert(cast(Table, ChannelMessage.__table__))

# History pages are the hottest read: their statements are built once (building one
# and computing its cache key cost more than SQLite running it), on the table's columns
# (plain rows, no ORM loading), and where the database can, it writes ``sent_at`` as
# RFC 3339 text itself (parsing it into a datetime and formatting that again costs more
# than the rest of the row).
# Deleted messages (tombstones) are left out: see "Deleting messages" in docs/API.md.
_TABLE = cast(Table, ChannelMessage.__table__)


class _Pages(NamedTuple):
    newest: Select[Any]
    newest_before: Select[Any]
    oldest_after: Select[Any]


def _pages(sent_at: ColumnElement[Any]) -> _Pages:
    c = _TABLE.c
    columns = [
        c.id,
        c.sender_id,
        c.sender_name_enc,
        c.body,
        sent_at,
        c.channel_seq,
        c.client_message_id,
        c.key_version,
        c.attachments,
    ]
    in_channel = and_(c.channel_id == bindparam("channel_id"), c.deleted_at.is_(None))
    limit = bindparam("limit", type_=Integer)
    newest = select(*columns).where(in_channel).order_by(c.seq.desc()).limit(limit)
    return _Pages(
        newest=newest,
        newest_before=newest.where(c.seq < bindparam("seq")),
        oldest_after=select(*columns)
        .where(in_channel, c.seq > bindparam("seq"))
        .order_by(c.seq)
        .limit(limit),
    )


_PAGES = {
    # SQLAlchemy stores SQLite datetimes as "YYYY-MM-DD HH:MM:SS.ffffff" (always six
    # digits of microseconds; the column holds naive UTC).
    "sqlite": _pages(func.replace(_TABLE.c.sent_at, " ", "T", type_=String) + "Z"),
    # timestamp without time zone, naive UTC; US is microseconds, zero-padded to six.
    "postgresql": _pages(
        func.to_char(_TABLE.c.sent_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"', type_=String)
    ),
}
