from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, delete, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.base import UTCDateTime
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
        """Spend one use, only while uses remain, unexpired and unrevoked (race-safe: the
        condition and the increment are one statement). The last use sets consumed_at."""
        result = await self.session.execute(
            update(Invite)
            .where(
                Invite.token_hash == token_hash,
                Invite.uses < Invite.max_uses,
                Invite.revoked_at.is_(None),
                Invite.expires_at > now,
            )
            .values(
                uses=Invite.uses + 1,
                consumed_at=case(
                    (Invite.uses + 1 >= Invite.max_uses, literal(now, UTCDateTime)),
                    else_=Invite.consumed_at,
                ),
                consumed_by=user_id,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def purge_expired(self, now: datetime) -> int:
        """Drop expired invites nobody redeemed; used ones stay as the record of who joined."""
        result = await self.session.execute(
            delete(Invite).where(Invite.uses == 0, Invite.expires_at <= now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def get_by_id(self, invite_id: str) -> Invite | None:
        result = await self.session.execute(select(Invite).where(Invite.id == invite_id))
        return result.scalar_one_or_none()

    async def revoke(self, invite_id: str, now: datetime) -> bool:
        """Revoke an invite (once: a second call changes nothing and answers False)."""
        result = await self.session.execute(
            update(Invite)
            .where(Invite.id == invite_id, Invite.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def page(
        self,
        limit: int,
        after: tuple[datetime, str] | None,
        *,
        state: str | None,
        now: datetime,
    ) -> list[Invite]:
        query = select(Invite).order_by(Invite.created_at, Invite.id).limit(limit)
        if after is not None:
            at, invite_id = after
            query = query.where(
                or_(Invite.created_at > at, and_(Invite.created_at == at, Invite.id > invite_id))
            )
        revoked = Invite.revoked_at.is_not(None)
        consumed = Invite.uses >= Invite.max_uses
        expired = Invite.expires_at <= now
        if state == "revoked":
            query = query.where(revoked)
        elif state == "consumed":
            query = query.where(~revoked, consumed)
        elif state == "expired":
            query = query.where(~revoked, ~consumed, expired)
        elif state == "active":
            query = query.where(~revoked, ~consumed, ~expired)
        result = await self.session.execute(query)
        return list(result.scalars().all())


def invite_state(invite: Invite, now: datetime) -> str:
    if invite.revoked_at is not None:
        return "revoked"
    if invite.uses >= invite.max_uses:
        return "consumed"
    if invite.expires_at <= now:
        return "expired"
    return "active"
