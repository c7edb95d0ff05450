from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import ChannelKeyEnvelope, Device, DirectoryKeyEnvelope
from dialtone.db.upsert import ReferenceGone, upsert


class EnvelopeWriter:
    """Who writes a batch of envelopes: decides which existing envelopes it may replace."""

    __slots__ = ("device_id", "is_admin", "user_id")

    def __init__(self, user_id: str, device_id: str, is_admin: bool) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.is_admin = is_admin


def _may_replace(table: Table, writer: EnvelopeWriter) -> ColumnElement[bool] | None:
    """An existing envelope is replaced only by the recipient device's own user, by its
    original sender (the same device, or another device of the same user), or by an admin.
    Evaluated by the database on the conflicting row, inside the upsert."""
    if writer.is_admin:
        return None
    # The writer's own devices (its calling device included): one uncorrelated subquery.
    own = select(Device.id).where(Device.user_id == writer.user_id)
    return or_(table.c.device_id.in_(own), table.c.sender_device_id.in_(own))


class KeyEnvelopeRepository:
    """Channel and directory key envelopes: sealed blobs addressed to devices."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def channel_envelope(self, channel_id: str, device_id: str) -> ChannelKeyEnvelope | None:
        return await self.session.get(ChannelKeyEnvelope, (channel_id, device_id))

    async def put_channel_envelopes(
        self, rows: Sequence[dict[str, Any]], writer: EnvelopeWriter
    ) -> set[str]:
        """Insert or replace, in one statement; the device ids whose envelope was written.

        Rows the writer may not replace are left as they are (see ``_may_replace``).
        """
        table: Table = ChannelKeyEnvelope.__table__  # type: ignore[assignment]
        return await self._put(table, ["channel_id", "device_id"], rows, writer)

    async def directory_envelope(self, device_id: str) -> DirectoryKeyEnvelope | None:
        return await self.session.get(DirectoryKeyEnvelope, device_id)

    async def put_directory_envelopes(
        self, rows: Sequence[dict[str, Any]], writer: EnvelopeWriter
    ) -> set[str]:
        table: Table = DirectoryKeyEnvelope.__table__  # type: ignore[assignment]
        return await self._put(table, ["device_id"], rows, writer)

    async def _put(
        self,
        table: Table,
        key: list[str],
        rows: Sequence[dict[str, Any]],
        writer: EnvelopeWriter,
    ) -> set[str]:
        insert = upsert(self.session, table).values(list(rows))
        excluded = insert.excluded
        statement = insert.on_conflict_do_update(
            index_elements=key,
            set_={
                name: excluded[name]
                for name in ("sender_device_id", "sender_public_key", "envelope", "created_at")
            },
            where=_may_replace(table, writer),
        ).returning(table.c.device_id)
        try:
            result = await self.session.execute(statement)
        except IntegrityError:
            # A foreign key: the channel or a device went away under a concurrent request.
            raise ReferenceGone from None
        return set(result.scalars())

    async def delete_for_device(self, device_id: str) -> None:
        await self.session.execute(
            delete(ChannelKeyEnvelope).where(ChannelKeyEnvelope.device_id == device_id)
        )
        await self.session.execute(
            delete(DirectoryKeyEnvelope).where(DirectoryKeyEnvelope.device_id == device_id)
        )
