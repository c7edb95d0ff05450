from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import Invite


class InviteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, invite: Invite) -> Invite:
        self.session.add(invite)
        await self.session.flush()
        return invite

    async def get(self, token_hash: str) -> Invite | None:
        return await self.session.get(Invite, token_hash)

    async def consume(self, token_hash: str, user_id: str, now: datetime) -> bool:
        """Mark the invite used, only if it is still unused and unexpired (race-safe)."""
        result = await self.session.execute(
            update(Invite)
            .where(
                Invite.token_hash == token_hash,
                Invite.consumed_at.is_(None),
                Invite.expires_at > now,
            )
            .values(consumed_at=now, consumed_by=user_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def purge_expired(self, now: datetime) -> int:
        """Drop expired invites nobody redeemed; spent ones stay as the record of who joined."""
        result = await self.session.execute(
            delete(Invite).where(Invite.consumed_at.is_(None), Invite.expires_at <= now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
