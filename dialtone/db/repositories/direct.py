"""Direct-message rooms: the one private room of two users, found by its ``direct_key``."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.base import new_id
from dialtone.db.models import Channel
from dialtone.db.upsert import upsert

_CHANNELS = cast(Table, Channel.__table__)


def direct_key(user_a: str, user_b: str) -> str:
    """The two ids, sorted, joined by ":": the same room whoever opens it."""
    first, second = sorted((user_a, user_b))
    return f"{first}:{second}"


def peer_of(key: str, user_id: str) -> str | None:
    """The other user of a direct room's key, for ``user_id`` (None when not theirs)."""
    first, _, second = key.partition(":")
    if user_id == first:
        return second
    if user_id == second:
        return first
    return None


class DirectRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, key: str) -> Channel | None:
        result = await self.session.execute(
            select(Channel).where(Channel.direct_key == key),
            execution_options={"populate_existing": True},
        )
        return result.scalar_one_or_none()

    async def create(self, key: str, created_by: str, now: datetime) -> str | None:
        """Insert the room; its id, or None when another request made it first (the unique
        ``direct_key``: one statement, whichever of two simultaneous inserts loses waits
        for the winner's commit and inserts nothing)."""
        channel_id = new_id()
        statement = (
            upsert(self.session, _CHANNELS)
            .values(
                id=channel_id,
                name_enc="",
                created_by=created_by,
                created_at=now,
                key_commitment=None,
                key_version=1,
                message_seq=0,
                private=True,
                direct_key=key,
                rekey_required=False,
            )
            .on_conflict_do_nothing(index_elements=["direct_key"])
            .returning(_CHANNELS.c.id)
        )
        result = await self.session.execute(statement)
        made: str | None = result.scalar_one_or_none()
        return made
