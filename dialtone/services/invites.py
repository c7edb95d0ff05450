from __future__ import annotations

from datetime import datetime, timedelta

from dialtone.db.models import Invite
from dialtone.db.repositories.invites import InviteRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.security import tokens
from dialtone.services.context import ServerContext


class InviteService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.invites = InviteRepository(uow.session)

    async def create(self) -> tuple[str, datetime]:
        """A single-use invite. Callers have already proven admin rights."""
        token = tokens.new_token()
        now = self.ctx.clock()
        expires_at = now + timedelta(seconds=self.ctx.settings.invite_ttl)
        await self.invites.add(
            Invite(token_hash=tokens.token_hash(token), created_at=now, expires_at=expires_at)
        )
        return token, expires_at
