"""The reads of ``POST /sync`` beyond history's: every channel a user sees, with its role."""

from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from dialtone.db.models import Channel, ChannelMember
from dialtone.db.repositories.members import visible_clause


class SyncRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def visible_channels(self, user_id: str) -> list[tuple[Channel, str | None]]:
        """Every channel ``user_id`` may see (public ones, and the private rooms they are
        in), oldest first, each with their role in it (None for a public channel)."""
        # An alias: visible_clause's own subquery on channel_members stays its own.
        mine = aliased(ChannelMember)
        result = await self.session.execute(
            select(Channel, mine.role)
            .outerjoin(mine, and_(mine.channel_id == Channel.id, mine.user_id == user_id))
            .where(visible_clause(user_id))
            .order_by(Channel.created_at, Channel.id)
        )
        return [(channel, role) for channel, role in result.all()]
