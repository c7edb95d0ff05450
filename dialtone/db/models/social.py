from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, utcnow


class UserBlock(Base):
    """``blocker`` does not want ``blocked``'s direct messages, messages or voice
    signalling. Never shown to the blocked user."""

    __tablename__ = "user_blocks"

    blocker_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserPreferences(Base):
    """A user's own settings the server must act on. No row: every default."""

    __tablename__ = "user_preferences"

    user_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # Who may open a direct message with this user: "anyone" | "trusted" | "nobody".
    direct_messages: Mapped[str] = mapped_column(
        String(16), default="anyone", server_default="anyone"
    )
