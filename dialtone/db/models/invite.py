from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, new_id, utcnow


class Invite(Base):
    """A server invite, stored only as the SHA-256 of its token.

    ``id`` names it in the admin API (the token never leaves the response that made
    it). ``consumed_at``/``consumed_by`` record the use that spent its last use.
    """

    __tablename__ = "invites"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    consumed_by: Mapped[str | None] = mapped_column(
        ID, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    id: Mapped[str] = mapped_column(ID, unique=True, default=new_id)
    max_uses: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    uses: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
