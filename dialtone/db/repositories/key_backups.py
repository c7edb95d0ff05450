from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import KeyBackup
from dialtone.db.upsert import ReferenceGone, upsert


class KeyBackupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> KeyBackup | None:
        result = await self.session.execute(select(KeyBackup).where(KeyBackup.user_id == user_id))
        return result.scalar_one_or_none()

    async def current_version(self, user_id: str) -> int:
        """The stored version, 0 when there is no backup."""
        result = await self.session.execute(
            select(KeyBackup.version).where(KeyBackup.user_id == user_id)
        )
        version = result.scalar_one_or_none()
        return 0 if version is None else int(version)

    async def swap(self, user_id: str, backup: str, version: int, now: datetime) -> int | None:
        """Store ``backup`` if the stored version is still ``version`` (0: none stored), in
        one statement; the new version, or None when another write came first.

        Version 0 inserts and does nothing on a conflict; a later version updates only the
        row still at that version. On PostgreSQL a concurrent writer waits for the row lock
        and then re-checks the version, so of several writers of one version exactly one
        wins; SQLite runs writes one at a time.
        """
        if version == 0:
            insert = (
                upsert(self.session, KeyBackup)
                .values(user_id=user_id, backup=backup, version=1, updated_at=now)
                .on_conflict_do_nothing(index_elements=[KeyBackup.user_id])
                .returning(KeyBackup.version)
            )
            try:
                result = await self.session.execute(insert)
            except IntegrityError:
                raise ReferenceGone from None  # the account was deleted meanwhile
        else:
            result = await self.session.execute(
                update(KeyBackup)
                .where(KeyBackup.user_id == user_id, KeyBackup.version == version)
                .values(backup=backup, version=KeyBackup.version + 1, updated_at=now)
                .returning(KeyBackup.version)
            )
        stored = result.scalar_one_or_none()
        return None if stored is None else int(stored)

    async def delete(self, user_id: str) -> None:
        await self.session.execute(delete(KeyBackup).where(KeyBackup.user_id == user_id))
