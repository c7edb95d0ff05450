from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import UserProfile
from dialtone.db.upsert import ReferenceGone, upsert


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def all(self) -> Sequence[UserProfile]:
        result = await self.session.execute(select(UserProfile).order_by(UserProfile.user_id))
        return result.scalars().all()

    async def upsert(self, user_id: str, name_enc: str, now: datetime) -> None:
        statement = upsert(self.session, UserProfile).values(
            user_id=user_id, name_enc=name_enc, updated_at=now
        )
        try:
            await self.session.execute(
                statement.on_conflict_do_update(
                    index_elements=[UserProfile.user_id],
                    set_={
                        "name_enc": statement.excluded.name_enc,
                        "updated_at": statement.excluded.updated_at,
                    },
                )
            )
        except IntegrityError:
            raise ReferenceGone from None  # the account was deleted meanwhile
