from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, new_id, utcnow

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
SEQ = BigInteger().with_variant(Integer(), "sqlite")


class Channel(Base):
    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name_enc: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The last ``channel_seq`` given out in this channel. The message writer raises it in
    # the batch's transaction (UPDATE ... RETURNING), so the row lock orders concurrent
    # writers on any node and no number is given twice.
    message_seq: Mapped[int] = mapped_column(SEQ, default=0, server_default="0")


class ChannelMessage(Base):
    """An encrypted message. ``seq`` orders history and backs the paging cursors."""

    __tablename__ = "channel_messages"
    __table_args__ = (
        Index("ix_channel_messages_channel_seq", "channel_id", "seq"),
        Index("ix_channel_messages_sender_id", "sender_id"),
        Index("ix_channel_messages_channel_deleted", "channel_id", "deleted_at"),
        # A client may retry a send: one stored message per (sender, client_message_id).
        Index(
            "uq_channel_messages_sender_client_id",
            "sender_id",
            "client_message_id",
            unique=True,
        ),
        Index("uq_channel_messages_channel_channel_seq", "channel_id", "channel_seq", unique=True),
    )

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(ID, unique=True, default=new_id)
    channel_id: Mapped[str] = mapped_column(ID, ForeignKey("channels.id", ondelete="CASCADE"))
    sender_id: Mapped[str] = mapped_column(ID)
    sender_device_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    sender_name_enc: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A tombstone: set when the message was deleted; body and sender_name_enc are then
    # emptied for good, the row keeps the id, channel, sender and times.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    deleted_by: Mapped[str | None] = mapped_column(ID, nullable=True, default=None)
    # The message's place in its channel (1, 2, 3, ...; ``seq`` on the wire), so a client
    # can see a hole. NULL only for rows written around the message writer (tests, tools).
    channel_seq: Mapped[int | None] = mapped_column(SEQ, nullable=True, default=None)
    # The sender's own id for this send (``channel.message.send``), for safe retries.
    client_message_id: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)


class ChannelKeyEnvelope(Base):
    """A channel key sealed for one recipient device; opaque to the server."""

    __tablename__ = "channel_key_envelopes"

    channel_id: Mapped[str] = mapped_column(
        ID, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    sender_device_id: Mapped[str] = mapped_column(ID)
    sender_public_key: Mapped[str] = mapped_column(String(44))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
