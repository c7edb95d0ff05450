from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import Integer, Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import ChannelMessage


class StoredMessage(NamedTuple):
    """A message as history returns it: plain columns, no ORM instance to build per row."""

    id: str
    channel_id: str
    sender_id: str
    sender_name_enc: str
    body: str
    sent_at: datetime


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
        if after_seq is not None:
            result = await self.session.execute(_OLDEST_AFTER, {**params, "seq": after_seq})
            return list(map(StoredMessage._make, result))
        if before_seq is not None:
            result = await self.session.execute(_NEWEST_BEFORE, {**params, "seq": before_seq})
        else:
            result = await self.session.execute(_NEWEST, params)
        rows = list(map(StoredMessage._make, result))
        rows.reverse()
        return rows


# Rows per statement when a history page is read (a page may hold up to 500).
PAGE_CHUNK = 100

# Core insert on the table: the ORM's unit of work costs more than SQLite's insert.
_INSERT = insert(cast(Table, ChannelMessage.__table__))

# History pages are the hottest read: their statements are built once (building one
# and computing its cache key cost more than SQLite running it).
_IN_CHANNEL = ChannelMessage.channel_id == bindparam("channel_id")
_LIMIT = bindparam("limit", type_=Integer)
_COLUMNS = [getattr(ChannelMessage, name) for name in StoredMessage._fields]
_NEWEST = select(*_COLUMNS).where(_IN_CHANNEL).order_by(ChannelMessage.seq.desc()).limit(_LIMIT)
_NEWEST_BEFORE = _NEWEST.where(ChannelMessage.seq < bindparam("seq"))
_OLDEST_AFTER = (
    select(*_COLUMNS)
    .where(_IN_CHANNEL, ChannelMessage.seq > bindparam("seq"))
    .order_by(ChannelMessage.seq)
    .limit(_LIMIT)
)
