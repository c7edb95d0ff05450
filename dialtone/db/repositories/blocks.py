"""Blocks between users and the preferences the server acts on (who may open a DM)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import UserBlock, UserPreferences
from dialtone.db.upsert import ReferenceGone, upsert

_BLOCKS = cast(Table, UserBlock.__table__)
_PREFERENCES = cast(Table, UserPreferences.__table__)

DEFAULT_DIRECT_MESSAGES = "anyone"


class BlockRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, blocker_id: str, blocked_id: str, now: datetime) -> bool:
        """True when the block is new, False when it existed. One statement, so two at
        once give one row; ``ReferenceGone`` when either user vanished meanwhile."""
        statement = (
            upsert(self.session, _BLOCKS)
            .values(blocker_id=blocker_id, blocked_id=blocked_id, created_at=now)
            .on_conflict_do_nothing(index_elements=["blocker_id", "blocked_id"])
        )
        try:
            result = await self.session.execute(statement)
        except IntegrityError as exc:  # a foreign key: a user is gone
            raise ReferenceGone(str(exc.orig)) from None
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def get(self, blocker_id: str, blocked_id: str) -> UserBlock | None:
        result = await self.session.execute(
            select(UserBlock).where(
                UserBlock.blocker_id == blocker_id, UserBlock.blocked_id == blocked_id
            )
        )
        return result.scalar_one_or_none()

    async def exists(self, blocker_id: str, blocked_id: str) -> bool:
        result = await self.session.execute(
            select(UserBlock.blocker_id).where(
                UserBlock.blocker_id == blocker_id, UserBlock.blocked_id == blocked_id
            )
        )
        return result.first() is not None

    async def remove(self, blocker_id: str, blocked_id: str) -> bool:
        result = await self.session.execute(
            delete(UserBlock).where(
                UserBlock.blocker_id == blocker_id, UserBlock.blocked_id == blocked_id
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def of(self, blocker_id: str) -> Sequence[UserBlock]:
        result = await self.session.execute(
            select(UserBlock)
            .where(UserBlock.blocker_id == blocker_id)
            .order_by(UserBlock.created_at, UserBlock.blocked_id)
        )
        return result.scalars().all()

    async def blocked_ids(self, blocker_id: str) -> set[str]:
        result = await self.session.execute(
            select(UserBlock.blocked_id).where(UserBlock.blocker_id == blocker_id)
        )
        return set(result.scalars())


class PreferenceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def direct_messages(self, user_id: str) -> str:
        result = await self.session.execute(
            select(UserPreferences.direct_messages).where(UserPreferences.user_id == user_id)
        )
        value = result.scalar_one_or_none()
        return DEFAULT_DIRECT_MESSAGES if value is None else value

    async def set_direct_messages(self, user_id: str, value: str) -> None:
        """Create or replace, in one statement. ``ReferenceGone`` when the user is gone."""
        statement = upsert(self.session, _PREFERENCES).values(
            user_id=user_id, direct_messages=value
        )
        statement = statement.on_conflict_do_update(
            index_elements=["user_id"], set_={"direct_messages": value}
        )
        try:
            await self.session.execute(statement)
        except IntegrityError as exc:
            raise ReferenceGone(str(exc.orig)) from None
