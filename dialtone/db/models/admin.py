"""Administration: bans, the server log and the settings an operator changes live."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, new_id, utcnow
from dialtone.db.models.channel import SEQ


class Ban(Base):
    """A user or an address range refused until ``expires_at`` (NULL: until lifted)."""

    __tablename__ = "bans"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    user_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    # Normalised network text ("203.0.113.0/24", "2001:db8::/48"; a single address /32 or /128).
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    # A user id, or "operator" for the X-Admin-Token / command line.
    created_by: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerLogEntry(Base):
    """One line of the server log: ids and server-made text only, never user content."""

    __tablename__ = "server_log"
    __table_args__ = (
        Index("ix_server_log_topic_id", "topic", "id"),
        Index("ix_server_log_user_id", "user_id"),
        Index("ix_server_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    topic: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    device_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    # Who did it (a user id or "operator"), when not the subject.
    actor_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


class ServerSetting(Base):
    """A setting changed through the admin API; absent keys keep their first-run value."""

    __tablename__ = "server_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
