from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, utcnow


class ChannelKeyVersion(Base):
    """The commitment of each earlier key version of a rotated channel (the current one
    is ``channels.key_commitment``), written by ``POST /channels/rotate``: a device that
    is handed an old version's key checks it as it checks the current one."""

    __tablename__ = "channel_key_versions"

    channel_id: Mapped[str] = mapped_column(
        ID, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    key_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_commitment: Mapped[str] = mapped_column(String(44))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
