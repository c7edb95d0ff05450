from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Session, User


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, record: Session) -> Session:
        self.session.add(record)
        await self.session.flush()
        return record

    async def resolve(self, token_hash: str, now: datetime) -> tuple[Session, User] | None:
        result = await self.session.execute(
            select(Session, User)
            .join(User, User.id == Session.user_id)
            .where(Session.token_hash == token_hash, Session.expires_at > now)
        )
        row = result.first()
        return None if row is None else (row[0], row[1])

    async def delete(self, token_hash: str) -> None:
        await self.session.execute(delete(Session).where(Session.token_hash == token_hash))

    async def delete_for_user(self, user_id: str) -> None:
        await self.session.execute(delete(Session).where(Session.user_id == user_id))

    async def delete_for_device(self, device_id: str) -> None:
        await self.session.execute(delete(Session).where(Session.device_id == device_id))

    async def purge_expired(self, now: datetime) -> int:
        result = await self.session.execute(delete(Session).where(Session.expires_at <= now))
        return int(result.rowcount)  # type: ignore[attr-defined]
