"""Who belongs to a private room, and what a user may see.

Public channels have no member rows: every user sees them. A private room is visible
only to the users in ``channel_members``; every route that takes a channel id asks
``visible`` (or filters with ``visible_clause``) so that for anyone else the room does
not exist.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Channel, ChannelMember
from dialtone.db.upsert import ReferenceGone, upsert

_MEMBERS: Table = ChannelMember.__table__  # type: ignore[assignment]

OWNER = "owner"
MEMBER = "member"
ROLES = (OWNER, MEMBER)


@dataclass(frozen=True, slots=True)
class Membership:
    user_id: str
    role: str
    added_at: datetime


def visible_clause(user_id: Any) -> ColumnElement[bool]:
    """True for the channels ``user_id`` may see: every public one and the private ones
    it is a member of. ``user_id`` is a value or a bound parameter."""
    return or_(
        Channel.private.is_(False),
        exists().where(
            and_(ChannelMember.channel_id == Channel.id, ChannelMember.user_id == user_id)
        ),
    )


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def visible(self, channel_id: str, user_id: str) -> Channel | None:
        """The channel if it exists and ``user_id`` may see it; None otherwise (the two
        are the same answer on the wire: 404)."""
        result = await self.session.execute(
            select(Channel).where(Channel.id == channel_id, visible_clause(user_id))
        )
        return result.scalar_one_or_none()

    async def role(self, channel_id: str, user_id: str) -> str | None:
        result = await self.session.execute(
            select(ChannelMember.role).where(
                ChannelMember.channel_id == channel_id, ChannelMember.user_id == user_id
            )
        )
        return result.scalar_one_or_none()

    async def add(
        self, channel_id: str, user_id: str, role: str, added_by: str | None, now: datetime
    ) -> bool:
        """Insert a member; True when added, False when already a member (role unchanged).
        One statement, so two adds at once give one row. ``ReferenceGone`` when the
        channel or the user vanished meanwhile."""
        statement = (
            upsert(self.session, _MEMBERS)
            .values(
                channel_id=channel_id,
                user_id=user_id,
                role=role,
                added_at=now,
                added_by=added_by,
            )
            .on_conflict_do_nothing(index_elements=["channel_id", "user_id"])
        )
        try:
            result = await self.session.execute(statement)
        except IntegrityError as exc:  # a foreign key: the channel or user is gone
            raise ReferenceGone(str(exc.orig)) from None
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_role(self, channel_id: str, user_id: str, role: str) -> bool:
        result = await self.session.execute(
            _MEMBERS.update()
            .where(_MEMBERS.c.channel_id == channel_id, _MEMBERS.c.user_id == user_id)
            .values(role=role)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def remove(self, channel_id: str, user_id: str) -> bool:
        result = await self.session.execute(
            delete(ChannelMember).where(
                ChannelMember.channel_id == channel_id, ChannelMember.user_id == user_id
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def of_channel(self, channel_id: str) -> Sequence[Membership]:
        result = await self.session.execute(
            select(ChannelMember.user_id, ChannelMember.role, ChannelMember.added_at)
            .where(ChannelMember.channel_id == channel_id)
            .order_by(ChannelMember.added_at, ChannelMember.user_id)
        )
        return [Membership(user_id=u, role=r, added_at=a) for u, r, a in result.all()]

    async def member_ids(self, channel_id: str) -> list[str]:
        result = await self.session.execute(
            select(ChannelMember.user_id).where(ChannelMember.channel_id == channel_id)
        )
        return list(result.scalars())

    async def private_channels_of(self, user_id: str) -> list[str]:
        result = await self.session.execute(
            select(ChannelMember.channel_id).where(ChannelMember.user_id == user_id)
        )
        return list(result.scalars())

    async def all_private(self) -> dict[str, set[str]]:
        """Every private room's members, for a node's delivery filter at start."""
        result = await self.session.execute(select(ChannelMember.channel_id, ChannelMember.user_id))
        rooms: dict[str, set[str]] = {}
        for channel_id, user_id in result.all():
            rooms.setdefault(channel_id, set()).add(user_id)
        private = await self.session.execute(select(Channel.id).where(Channel.private.is_(True)))
        for channel_id in private.scalars():
            rooms.setdefault(channel_id, set())
        return rooms

    async def hidden(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of these (channel id, user id) pairs, those whose channel is a private room
        the user is not in, in one query (a public or missing channel is not hidden)."""
        if not pairs:
            return set()
        users = {user_id for _, user_id in pairs}
        result = await self.session.execute(
            select(Channel.id, ChannelMember.user_id)
            .outerjoin(
                ChannelMember,
                and_(ChannelMember.channel_id == Channel.id, ChannelMember.user_id.in_(users)),
            )
            .where(
                Channel.id.in_({channel_id for channel_id, _ in pairs}), Channel.private.is_(True)
            )
        )
        private: set[str] = set()
        inside: set[tuple[str, str]] = set()
        for channel_id, user_id in result.all():
            private.add(channel_id)
            if user_id is not None:
                inside.add((channel_id, user_id))
        return {pair for pair in pairs if pair[0] in private and pair not in inside}
