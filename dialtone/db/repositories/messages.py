from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import ChannelMessage


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
    ) -> list[ChannelMessage]:
        """Up to ``limit`` messages, oldest first.

        Without a cursor: the newest. ``before_seq``: the newest ones older than it.
        ``after_seq``: the oldest ones newer than it (catching up after a reconnect).
        """
        query = select(ChannelMessage).where(ChannelMessage.channel_id == channel_id)
        if after_seq is not None:
            query = query.where(ChannelMessage.seq > after_seq).order_by(ChannelMessage.seq)
            result = await self.session.execute(query.limit(limit))
            return list(result.scalars().all())
        if before_seq is not None:
            query = query.where(ChannelMessage.seq < before_seq)
        result = await self.session.execute(query.order_by(ChannelMessage.seq.desc()).limit(limit))
        rows = list(result.scalars().all())
        rows.reverse()
        return rows
