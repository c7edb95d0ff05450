"""Channel and directory key envelopes: sealed blobs addressed to devices.

One envelope per (recipient device, sender device), and for channels per key version:
a sender replaces only its own copy, so a wrong envelope never hides a right one. Reads
order a recipient's envelopes by one preference (``_order``): sent by an admin or by the
channel's creator first, then by the recipient's own user, then the newest; the default
read answers the first, ``all`` lists them in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    delete,
    exists,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import FromClause

from dialtone.db.models import (
    Channel,
    ChannelKeyEnvelope,
    ChannelMember,
    Device,
    DirectoryKeyEnvelope,
    User,
)
from dialtone.db.upsert import ReferenceGone, upsert

_CHANNEL: Table = ChannelKeyEnvelope.__table__  # type: ignore[assignment]
_DIRECTORY: Table = DirectoryKeyEnvelope.__table__  # type: ignore[assignment]
_USERS: Table = User.__table__  # type: ignore[assignment]
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
_CHANNELS: Table = Channel.__table__  # type: ignore[assignment]
_MEMBERS: Table = ChannelMember.__table__  # type: ignore[assignment]
_REPLACED = ("sender_user_id", "sender_public_key", "envelope", "created_at")


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    device_id: str
    sender_device_id: str
    sender_user_id: str | None
    sender_public_key: str
    envelope: str
    created_at: datetime
    key_version: int | None  # None for the directory key


def _rank(
    envelope: FromClause,
    sender: FromClause,
    recipient_user: ColumnElement[Any],
    creator: str | None,
) -> ColumnElement[int]:
    """0: sent by an admin or the channel's creator; 1: by the recipient's own user;
    2: anyone else. ``sender`` is ``users`` outer-joined on ``sender_user_id``."""
    privileged: ColumnElement[bool] = sender.c.is_admin.is_(True)
    if creator is not None:  # never compare with NULL: "= NULL" would be rendered IS NULL
        privileged = or_(privileged, envelope.c.sender_user_id == creator)
    return case(
        (privileged, 0),
        (envelope.c.sender_user_id == recipient_user, 1),
        else_=2,
    )


def _order(envelope: FromClause, rank: ColumnElement[int]) -> list[ColumnElement[Any]]:
    """The preference, best first; sender_device_id settles a tie in time."""
    return [rank, envelope.c.created_at.desc(), envelope.c.sender_device_id]


def _outranks(
    other: FromClause,
    other_rank: ColumnElement[int],
    mine: FromClause,
    my_rank: ColumnElement[int],
) -> ColumnElement[bool]:
    """``other`` comes before ``mine`` in ``_order``."""
    return or_(
        other_rank < my_rank,
        and_(
            other_rank == my_rank,
            or_(
                other.c.created_at > mine.c.created_at,
                and_(
                    other.c.created_at == mine.c.created_at,
                    other.c.sender_device_id < mine.c.sender_device_id,
                ),
            ),
        ),
    )


def _stored(row: Any, with_version: bool) -> StoredEnvelope:
    return StoredEnvelope(
        device_id=row.device_id,
        sender_device_id=row.sender_device_id,
        sender_user_id=row.sender_user_id,
        sender_public_key=row.sender_public_key,
        envelope=row.envelope,
        created_at=row.created_at,
        key_version=row.key_version if with_version else None,
    )


def _is_member(channel_id: ColumnElement[Any], user_id: ColumnElement[Any]) -> ColumnElement[bool]:
    return exists().where(and_(_MEMBERS.c.channel_id == channel_id, _MEMBERS.c.user_id == user_id))


def _member_device(
    channel_id: ColumnElement[Any], device_id: ColumnElement[Any]
) -> ColumnElement[bool]:
    """The device belongs to a current member of the room."""
    owner = _DEVICES.alias("member_device")
    return exists().where(
        and_(
            owner.c.id == device_id,
            _MEMBERS.c.channel_id == channel_id,
            _MEMBERS.c.user_id == owner.c.user_id,
        )
    )


class KeyEnvelopeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------ reads

    def _ranked(
        self, table: Table, recipient_user: str, creator: str | None, *where: ColumnElement[bool]
    ) -> Select[Any]:
        sender = _USERS.alias("sender")
        rank = _rank(table, sender, literal(recipient_user), creator)
        return (
            select(table)
            .select_from(table.outerjoin(sender, sender.c.id == table.c.sender_user_id))
            .where(*where)
            .order_by(*_order(table, rank))
        )

    async def channel_envelopes(
        self,
        channel_id: str,
        device_id: str,
        key_version: int,
        *,
        recipient_user: str,
        creator: str,
        members_only: bool = False,
        limit: int | None = None,
    ) -> list[StoredEnvelope]:
        """The recipient device's envelopes of one key version, preferred first.
        ``members_only`` (private rooms): none unless the device's user is a current
        member, whatever is stored (an envelope that raced the user's removal)."""
        where = [
            _CHANNEL.c.channel_id == channel_id,
            _CHANNEL.c.device_id == device_id,
            _CHANNEL.c.key_version == key_version,
        ]
        if members_only:
            where.append(_member_device(_CHANNEL.c.channel_id, _CHANNEL.c.device_id))
        query = self._ranked(_CHANNEL, recipient_user, creator, *where).limit(limit)
        result = await self.session.execute(query)
        return [_stored(row, True) for row in result]

    async def directory_envelopes(
        self, device_id: str, *, recipient_user: str, limit: int | None = None
    ) -> list[StoredEnvelope]:
        query = self._ranked(
            _DIRECTORY, recipient_user, None, _DIRECTORY.c.device_id == device_id
        ).limit(limit)
        result = await self.session.execute(query)
        return [_stored(row, False) for row in result]

    async def held_channels(self, device_id: str, *, viewer: str) -> list[str]:
        """The channels for which the device has an envelope of the channel's current key
        version sent by a device of its own user (its self-confirmation, or one from its
        user's other device): one that no other member can forge. A private room only
        while the device's user is a member and ``viewer`` (who asks) may see it."""
        recipient = _DEVICES.alias("recipient")
        query = (
            select(_CHANNEL.c.channel_id)
            .distinct()
            .select_from(
                _CHANNEL.join(recipient, recipient.c.id == _CHANNEL.c.device_id).join(
                    _CHANNELS,
                    and_(
                        _CHANNELS.c.id == _CHANNEL.c.channel_id,
                        _CHANNELS.c.key_version == _CHANNEL.c.key_version,
                    ),
                )
            )
            .where(
                _CHANNEL.c.device_id == device_id,
                _CHANNEL.c.sender_user_id == recipient.c.user_id,
                or_(
                    _CHANNELS.c.private.is_(False),
                    and_(
                        _is_member(_CHANNELS.c.id, recipient.c.user_id),
                        _is_member(_CHANNELS.c.id, literal(viewer)),
                    ),
                ),
            )
            .order_by(_CHANNEL.c.channel_id)
        )
        result = await self.session.execute(query)
        return list(result.scalars())

    async def holds_directory(self, device_id: str) -> bool:
        """The same for the directory key (which has no versions)."""
        recipient = _DEVICES.alias("recipient")
        query = (
            select(_DIRECTORY.c.device_id)
            .select_from(_DIRECTORY.join(recipient, recipient.c.id == _DIRECTORY.c.device_id))
            .where(
                _DIRECTORY.c.device_id == device_id,
                _DIRECTORY.c.sender_user_id == recipient.c.user_id,
            )
            .limit(1)
        )
        result = await self.session.execute(query)
        return result.first() is not None

    # ------------------------------------------------------------ writes

    async def put_channel_envelopes(
        self, channel_id: str, rows: Sequence[dict[str, Any]], *, creator: str
    ) -> list[str]:
        """Insert or replace the caller's own copies, in one statement; the recipient
        devices whose default read still answers another sender's envelope (one that
        comes before the caller's in the preference)."""
        key = ["channel_id", "device_id", "sender_device_id", "key_version"]
        await self._upsert(_CHANNEL, key, rows)
        written = [(row["device_id"], row["key_version"]) for row in rows]
        return await self._behind(
            _CHANNEL,
            creator,
            lambda mine: [
                mine.c.channel_id == channel_id,
                tuple_(mine.c.device_id, mine.c.key_version).in_(written),
            ],
            ("channel_id", "device_id", "key_version"),
            rows[0]["sender_device_id"],
        )

    async def put_directory_envelopes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        await self._upsert(_DIRECTORY, ["device_id", "sender_device_id"], rows)
        written = [row["device_id"] for row in rows]
        return await self._behind(
            _DIRECTORY,
            None,
            lambda mine: [mine.c.device_id.in_(written)],
            ("device_id",),
            rows[0]["sender_device_id"],
        )

    async def _upsert(self, table: Table, key: list[str], rows: Sequence[dict[str, Any]]) -> None:
        insert = upsert(self.session, table).values(list(rows))
        statement = insert.on_conflict_do_update(
            index_elements=key, set_={name: insert.excluded[name] for name in _REPLACED}
        )
        try:
            await self.session.execute(statement)
        except IntegrityError:
            # A foreign key: the channel or a device went away under a concurrent request.
            raise ReferenceGone from None

    async def _behind(
        self,
        table: Table,
        creator: str | None,
        written: Callable[[FromClause], list[ColumnElement[bool]]],
        same: tuple[str, ...],
        sender_device_id: str,
    ) -> list[str]:
        """One query: which recipients of the rows just written (``written(alias)`` picks
        them, all by ``sender_device_id``) have another envelope for the same recipient
        (and version) that comes before it in the preference."""
        mine = table.alias("mine")
        other = table.alias("other")
        my_sender = _USERS.alias("my_sender")
        other_sender = _USERS.alias("other_sender")
        recipient = _DEVICES.alias("recipient")
        my_rank = _rank(mine, my_sender, recipient.c.user_id, creator)
        other_rank = _rank(other, other_sender, recipient.c.user_id, creator)
        query = (
            select(mine.c.device_id)
            .distinct()
            .select_from(
                mine.join(recipient, recipient.c.id == mine.c.device_id)
                .join(
                    other,
                    and_(
                        *(other.c[name] == mine.c[name] for name in same),
                        other.c.sender_device_id != mine.c.sender_device_id,
                    ),
                )
                .outerjoin(my_sender, my_sender.c.id == mine.c.sender_user_id)
                .outerjoin(other_sender, other_sender.c.id == other.c.sender_user_id)
            )
            .where(
                mine.c.sender_device_id == sender_device_id,
                *written(mine),
                _outranks(other, other_rank, mine, my_rank),
            )
        )
        result = await self.session.execute(query)
        return list(result.scalars())

    async def delete_for_device(self, device_id: str) -> None:
        await self.session.execute(
            delete(ChannelKeyEnvelope).where(ChannelKeyEnvelope.device_id == device_id)
        )
        await self.session.execute(
            delete(DirectoryKeyEnvelope).where(DirectoryKeyEnvelope.device_id == device_id)
        )
