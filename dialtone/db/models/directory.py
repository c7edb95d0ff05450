from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, utcnow


class DirectoryKeyEnvelope(Base):
    """The directory (profile) key sealed by one sender device for one recipient device:
    one per (recipient, sender), as for channel keys."""

    __tablename__ = "directory_key_envelopes"

    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    sender_device_id: Mapped[str] = mapped_column(ID, primary_key=True)
    # As in ChannelKeyEnvelope: NULL only for rows older than revision 0004 whose sending
    # device was gone by then.
    sender_user_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    sender_public_key: Mapped[str] = mapped_column(String(44))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
