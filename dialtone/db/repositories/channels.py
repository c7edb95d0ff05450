from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import cast

from sqlalchemy import Integer, Table, and_, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Channel, ChannelMember, User


class ChannelRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, channel_id: str) -> Channel | None:
        return await self.session.get(Channel, channel_id)

    async def exists(self, channel_id: str) -> bool:
        result = await self.session.execute(select(Channel.id).where(Channel.id == channel_id))
        return result.first() is not None

    async def existing(self, channel_ids: Collection[str]) -> set[str]:
        """Which of these channels exist, in one query."""
        result = await self.session.execute(
            select(Channel.id).where(Channel.id.in_(list(channel_ids)))
        )
        return set(result.scalars())

    async def take_seqs(self, wanted: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """Raise each channel's message counter by the number wanted; the new top and the
        current key version of each channel that exists (a missing one is left out).
        One UPDATE per channel, in id order: the row lock it takes orders concurrent
        writers (until the commit) and two batches always lock their channels in the
        same order (no deadlock)."""
        tops: dict[str, tuple[int, int]] = {}
        for channel_id in sorted(wanted):
            result = await self.session.execute(
                _TAKE_SEQS, {"channel_id": channel_id, "n": wanted[channel_id]}
            )
            row = result.one_or_none()
            if row is not None:
                tops[channel_id] = (int(row[0]), int(row[1]))
        return tops

    async def give_back_seqs(self, unused: Mapping[str, int]) -> None:
        """Lower counters raised by ``take_seqs`` in this transaction by the numbers not
        used (the row is still locked by it: nobody else took a number meanwhile)."""
        for channel_id in sorted(unused):
            await self.session.execute(
                _GIVE_BACK_SEQS, {"channel_id": channel_id, "n": unused[channel_id]}
            )

    async def all(self) -> Sequence[Channel]:
        result = await self.session.execute(
            select(Channel).order_by(Channel.created_at, Channel.id)
        )
        return result.scalars().all()

    async def visible_with_roles(self, user_id: str) -> list[tuple[Channel, str | None]]:
        """Every public channel and every private room ``user_id`` is in, with its role
        there (None for public channels), oldest first."""
        result = await self.session.execute(
            select(Channel, ChannelMember.role)
            .outerjoin(
                ChannelMember,
                and_(ChannelMember.channel_id == Channel.id, ChannelMember.user_id == user_id),
            )
            .where((Channel.private.is_(False)) | ChannelMember.user_id.is_not(None))
            .order_by(Channel.created_at, Channel.id)
        )
        return [(channel, role) for channel, role in result.all()]

    async def mark_rekey(self, channel_id: str) -> int | None:
        """Flag the room for a key rotation; its current key version, None when gone.
        The UPDATE also locks the row until the commit, which orders concurrent
        membership changes of one room (last owner, last member)."""
        result = await self.session.execute(
            update(_CHANNELS)
            .where(_CHANNELS.c.id == channel_id)
            .values(rekey_required=True)
            .returning(_CHANNELS.c.key_version)
        )
        version = result.scalar_one_or_none()
        return None if version is None else int(version)

    async def account_ids(self) -> list[str]:
        """Every account (names reserved without a password are not accounts): the
        members of a public channel."""
        result = await self.session.execute(
            select(User.id)
            .where(User.password_hash.is_not(None))
            .order_by(User.created_at, User.id)
        )
        return list(result.scalars())

    async def add(self, channel: Channel) -> Channel:
        self.session.add(channel)
        await self.session.flush()
        return channel

    async def rename(self, channel_id: str, name_enc: str) -> Channel | None:
        """One UPDATE … RETURNING: None when the channel is gone (deleted meanwhile too)."""
        result = await self.session.execute(
            update(Channel)
            .where(Channel.id == channel_id)
            .values(name_enc=name_enc)
            .returning(Channel),
            execution_options={"populate_existing": True},
        )
        return result.scalar_one_or_none()

    async def set_commitment(self, channel_id: str, commitment: str) -> Channel | None:
        """Set the key commitment if it is unset, in one UPDATE … RETURNING: of several
        at once exactly one gets the row; None when it was set already or the channel
        is gone."""
        result = await self.session.execute(
            update(Channel)
            .where(Channel.id == channel_id, Channel.key_commitment.is_(None))
            .values(key_commitment=commitment)
            .returning(Channel),
            execution_options={"populate_existing": True},
        )
        return result.scalar_one_or_none()

    async def delete(self, channel_id: str) -> bool:
        result = await self.session.execute(delete(Channel).where(Channel.id == channel_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


# Core, on the table: no ORM session synchronisation for a counter.
_CHANNELS = cast(Table, Channel.__table__)
_TAKE_SEQS = (
    update(_CHANNELS)
    .where(_CHANNELS.c.id == bindparam("channel_id"))
    .values(message_seq=_CHANNELS.c.message_seq + bindparam("n", type_=Integer))
    .returning(_CHANNELS.c.message_seq, _CHANNELS.c.key_version)
)
_GIVE_BACK_SEQS = (
    update(_CHANNELS)
    .where(_CHANNELS.c.id == bindparam("channel_id"))
    .values(message_seq=_CHANNELS.c.message_seq - bindparam("n", type_=Integer))
)
