from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, utcnow


class KeyBackup(Base):
    """One user's key backup: an opaque blob the user's own clients encrypt (the server
    holds no key for it), and a version for compare-and-swap writes."""

    __tablename__ = "key_backups"

    user_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    backup: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
