from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, utcnow


class DirectoryKeyEnvelope(Base):
    """The directory (profile) key sealed for one recipient device."""

    __tablename__ = "directory_key_envelopes"

    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    sender_device_id: Mapped[str] = mapped_column(ID)
    sender_public_key: Mapped[str] = mapped_column(String(44))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
