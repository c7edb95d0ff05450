from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, new_id, utcnow


class StoredFile(Base):
    """An uploaded file: opaque bytes (the client encrypted them) in the file storage.

    Claimed by one message (``message_id``, set by the message writer) or named as a
    channel's image; a file neither claims within a day is swept. No foreign key on
    ``message_id``: the writer claims a file in the transaction that inserts the message,
    before the row exists; deleting a message deletes its files explicitly (the bytes
    leave the storage after the commit)."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_message_id", "message_id"),
        Index("ix_files_uploader_id", "uploader_id"),
        Index("ix_files_unclaimed_created", "message_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    channel_id: Mapped[str] = mapped_column(ID, ForeignKey("channels.id", ondelete="CASCADE"))
    uploader_id: Mapped[str] = mapped_column(ID)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # hex of the stored (encrypted) bytes
    storage_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message_id: Mapped[str | None] = mapped_column(ID, nullable=True, default=None)
    # Its place among the message's attachments (0, 1, ...).
    position: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
