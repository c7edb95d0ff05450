"""A private room's key versions: the one-statement rotation and the rotation mark."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Table, and_, bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.base import UTCDateTime
from dialtone.db.models import Channel, ChannelKeyVersion, ChannelMember, Device
from dialtone.db.upsert import upsert

_VERSIONS: Table = ChannelKeyVersion.__table__  # type: ignore[assignment]


class KeyRotationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def rotate(
        self, channel_id: str, key_version: int, commitment: str, now: datetime
    ) -> Channel | None:
        """Move a private room from ``key_version - 1`` to ``key_version`` with its new
        commitment, clearing the rotation mark, in one UPDATE … WHERE key_version = the
        old one … RETURNING: of two devices racing from one version exactly one gets the
        row (the other's WHERE no longer matches once the winner committed). None when
        the version moved on, or the room is gone or public (the caller rolls back).

        The old version's commitment is kept first (``channel_key_versions``), copied
        from the row in the same statement that reads it."""
        old = key_version - 1
        keep = select(
            Channel.id,
            Channel.key_version,
            Channel.key_commitment,
            bindparam("now", now, type_=UTCDateTime),
        ).where(
            Channel.id == channel_id,
            Channel.private.is_(True),
            Channel.key_version == old,
            Channel.key_commitment.is_not(None),
        )
        await self.session.execute(
            upsert(self.session, _VERSIONS)
            .from_select(["channel_id", "key_version", "key_commitment", "created_at"], keep)
            .on_conflict_do_nothing(index_elements=["channel_id", "key_version"])
        )
        result = await self.session.execute(
            update(Channel)
            .where(
                Channel.id == channel_id,
                Channel.private.is_(True),
                Channel.key_version == old,
            )
            .values(key_version=key_version, key_commitment=commitment, rekey_required=False)
            .returning(Channel),
            execution_options={"populate_existing": True},
        )
        return result.scalar_one_or_none()

    async def commitment_of(self, channel: Channel, key_version: int) -> str | None:
        """The commitment of one of the channel's key versions (None: not known, as for a
        channel made before commitments existed)."""
        if key_version == channel.key_version:
            return channel.key_commitment
        result = await self.session.execute(
            select(ChannelKeyVersion.key_commitment).where(
                ChannelKeyVersion.channel_id == channel.id,
                ChannelKeyVersion.key_version == key_version,
            )
        )
        return result.scalar_one_or_none()

    async def mark(self, channel_ids: Collection[str]) -> list[tuple[str, int]]:
        """Set ``rekey_required`` on these private rooms (public ones are left alone), in
        one statement; the (channel id, current key version) of each one marked."""
        if not channel_ids:
            return []
        result = await self.session.execute(
            update(Channel)
            .where(Channel.id.in_(sorted(set(channel_ids))), Channel.private.is_(True))
            .values(rekey_required=True)
            .returning(Channel.id, Channel.key_version),
            execution_options={"synchronize_session": False},
        )
        return sorted((row[0], int(row[1])) for row in result)

    async def private_rooms_of(self, user_id: str) -> list[str]:
        """The private rooms ``user_id`` is a member of."""
        result = await self.session.execute(
            select(ChannelMember.channel_id)
            .join(Channel, Channel.id == ChannelMember.channel_id)
            .where(ChannelMember.user_id == user_id, Channel.private.is_(True))
        )
        return list(result.scalars())

    async def non_member_devices(self, channel_id: str, device_ids: Collection[str]) -> list[str]:
        """Which of these devices belong to no current member of the room (unknown device
        ids included), in one query."""
        wanted = sorted(set(device_ids))
        if not wanted:
            return []
        result = await self.session.execute(
            select(Device.id).where(
                Device.id.in_(wanted),
                exists().where(
                    and_(
                        ChannelMember.channel_id == channel_id,
                        ChannelMember.user_id == Device.user_id,
                    )
                ),
            )
        )
        members = set(result.scalars())
        return [device_id for device_id in wanted if device_id not in members]
