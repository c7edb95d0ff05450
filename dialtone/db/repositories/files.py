"""The ``files`` table: uploads, their claims by messages, their sweep."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Channel, ChannelMessage, StoredFile
from dialtone.db.repositories.members import visible_clause
from dialtone.db.upsert import ReferenceGone


class FileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, file: StoredFile) -> StoredFile:
        """Insert; ReferenceGone when its channel was deleted meanwhile."""
        self.session.add(file)
        try:
            await self.session.flush()
        except IntegrityError:
            raise ReferenceGone from None
        return file

    async def visible(self, file_id: str, user_id: str) -> StoredFile | None:
        """The file if its channel is one ``user_id`` may see (None: 404 either way)."""
        result = await self.session.execute(
            select(StoredFile)
            .join(Channel, Channel.id == StoredFile.channel_id)
            .where(StoredFile.id == file_id, visible_clause(user_id))
        )
        return result.scalar_one_or_none()

    async def get(self, file_id: str) -> StoredFile | None:
        return await self.session.get(StoredFile, file_id)

    async def used_by(self, user_id: str) -> int:
        """Bytes of the files ``user_id`` uploaded that are still stored."""
        result = await self.session.execute(
            select(func.coalesce(func.sum(StoredFile.size), 0)).where(
                StoredFile.uploader_id == user_id
            )
        )
        return int(result.scalar_one())

    async def used_by_users(self, user_ids: Collection[str]) -> dict[str, int]:
        if not user_ids:
            return {}
        result = await self.session.execute(
            select(StoredFile.uploader_id, func.sum(StoredFile.size))
            .where(StoredFile.uploader_id.in_(list(user_ids)))
            .group_by(StoredFile.uploader_id)
        )
        return {row[0]: int(row[1]) for row in result}

    async def total(self) -> tuple[int, int]:
        """(number of files, bytes) stored on the whole server."""
        result = await self.session.execute(
            select(func.count(), func.coalesce(func.sum(StoredFile.size), 0)).select_from(
                StoredFile
            )
        )
        count, size = result.one()
        return int(count), int(size)

    async def claim(
        self, file_ids: Sequence[str], message_id: str, uploader_id: str, channel_id: str
    ) -> bool:
        """Give these files to a message, in one statement per file: each must be
        ``uploader_id``'s, in ``channel_id``, and claimed by nothing (no message, not a
        channel's image). All or none: False (and nothing claimed) when one is not.
        Two messages claiming the same file at once: the row lock of the first UPDATE
        makes the second find it claimed."""
        for position, file_id in enumerate(file_ids):
            result = await self.session.execute(
                update(StoredFile)
                .where(
                    StoredFile.id == file_id,
                    StoredFile.uploader_id == uploader_id,
                    StoredFile.channel_id == channel_id,
                    StoredFile.message_id.is_(None),
                    ~exists().where(Channel.image_file_id == file_id),
                )
                .values(message_id=message_id, position=position)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                await self.session.execute(
                    update(StoredFile)
                    .where(StoredFile.message_id == message_id)
                    .values(message_id=None, position=None)
                    .execution_options(synchronize_session=False)
                )
                return False
        return True

    async def unclaimed_of(self, file_id: str, uploader_id: str, channel_id: str) -> bool:
        result = await self.session.execute(
            select(StoredFile.id).where(
                StoredFile.id == file_id,
                StoredFile.uploader_id == uploader_id,
                StoredFile.channel_id == channel_id,
                StoredFile.message_id.is_(None),
            )
        )
        return result.first() is not None

    async def delete_for_messages(self, message_ids: Collection[str]) -> list[str]:
        """Delete the files of these messages; their storage keys."""
        keys: list[str] = []
        ids = list(message_ids)
        for start in range(0, len(ids), 500):
            result = await self.session.execute(
                delete(StoredFile)
                .where(StoredFile.message_id.in_(ids[start : start + 500]))
                .returning(StoredFile.storage_key)
            )
            keys.extend(result.scalars())
        return keys

    async def delete_for_messages_before(self, moment: datetime) -> list[str]:
        """Message retention: the files of the messages sent before ``moment``."""
        result = await self.session.execute(
            delete(StoredFile)
            .where(
                StoredFile.message_id.in_(
                    select(ChannelMessage.id).where(ChannelMessage.sent_at < moment)
                )
            )
            .returning(StoredFile.storage_key)
        )
        return list(result.scalars())

    async def delete_ids(self, file_ids: Collection[str]) -> list[str]:
        if not file_ids:
            return []
        result = await self.session.execute(
            delete(StoredFile)
            .where(StoredFile.id.in_(list(file_ids)))
            .returning(StoredFile.storage_key)
        )
        return list(result.scalars())

    async def delete_unclaimed_before(self, moment: datetime, limit: int = 1000) -> list[str]:
        """The orphan sweep: uploads older than ``moment`` that no message claimed and no
        channel shows as its image."""
        orphans = (
            select(StoredFile.id)
            .where(
                StoredFile.message_id.is_(None),
                StoredFile.created_at < moment,
                ~exists().where(Channel.image_file_id == StoredFile.id),
            )
            .limit(limit)
        )
        ids = list((await self.session.execute(orphans)).scalars())
        if not ids:
            return []
        result = await self.session.execute(
            delete(StoredFile)
            .where(StoredFile.id.in_(ids), StoredFile.message_id.is_(None))
            .returning(StoredFile.storage_key)
        )
        return list(result.scalars())

    async def keys_of_channel(self, channel_id: str) -> list[str]:
        result = await self.session.execute(
            select(StoredFile.storage_key).where(StoredFile.channel_id == channel_id)
        )
        return list(result.scalars())

    async def set_channel_image(
        self, channel_id: str, file_id: str | None, user_id: str
    ) -> tuple[Channel, str | None] | None:
        """Point the channel's image at ``file_id`` (an unclaimed file of ``user_id`` in
        this channel; None clears it). Returns the channel and the image it replaced,
        or None when the file does not qualify or the channel is gone."""
        # A write first: it takes the row's lock (PostgreSQL) or the database's write
        # lock (SQLite, where a SELECT ... FOR UPDATE locks nothing) before the current
        # image is read, so two changes at once each see the other's image to replace.
        locked = await self.session.execute(
            update(Channel)
            .where(Channel.id == channel_id)
            .values(image_file_id=Channel.image_file_id)
            .returning(Channel.image_file_id)
            .execution_options(synchronize_session=False)
        )
        row = locked.first()
        if row is None:
            return None
        if file_id is not None and not await self.unclaimed_of(file_id, user_id, channel_id):
            return None
        previous = row[0]
        result = await self.session.execute(
            update(Channel)
            .where(Channel.id == channel_id)
            .values(image_file_id=file_id)
            .returning(Channel),
            execution_options={"populate_existing": True},
        )
        updated = result.scalar_one_or_none()
        if updated is None:
            return None
        return updated, (previous if previous != file_id else None)
