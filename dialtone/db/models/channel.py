from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, false, text
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
    # base64 of HMAC-SHA256(channel key, "dialtone-key-commitment-v1"), made by the client
    # that made the key (docs/API.md): lets a device check a key handed on by any member.
    # NULL until set (channels made before commitments existed).
    key_commitment: Mapped[str | None] = mapped_column(String(44), nullable=True, default=None)
    # The current key's version; 1 until key rotation exists.
    key_version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    # The last ``channel_seq`` given out in this channel. The message writer raises it in
    # the batch's transaction (UPDATE ... RETURNING), so the row lock orders concurrent
    # writers on any node and no number is given twice.
    message_seq: Mapped[int] = mapped_column(SEQ, default=0, server_default="0")
    # A private room is listed, read, written and joined only by its members
    # (``channel_members``); a public one (the default) by every user.
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A direct-message room: the two users' ids, sorted, joined by ":". Unique, so two
    # clicks at once make one room (an insert that loses the race finds the winner).
    direct_key: Mapped[str | None] = mapped_column(String(73), unique=True, nullable=True)
    # Set when a member left (or lost a device) and the key must change: the next online
    # owner or admin device rotates; cleared by POST /channels/rotate.
    rekey_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The channel's picture (issue 17): a file of this channel, encrypted with its key.
    # No foreign key (files and channels would reference each other); a deleted file
    # is cleared here in the same transaction.
    image_file_id: Mapped[str | None] = mapped_column(ID, nullable=True, default=None)


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
    # The channel key version the sender encrypted with (1 before any rotation).
    key_version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    # The ids of the files it carries (issue 17), comma-separated in their order; NULL
    # for none. Kept on the row so a history page reads them in the same statement.
    attachments: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)


class ChannelMember(Base):
    """A member of a private room. Public channels have no rows: everyone is a member."""

    __tablename__ = "channel_members"

    channel_id: Mapped[str] = mapped_column(
        ID, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="member")  # "owner" | "member"
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    added_by: Mapped[str | None] = mapped_column(ID, nullable=True, default=None)


class ChannelKeyEnvelope(Base):
    """A channel key sealed by one sender device for one recipient device; opaque to the
    server. One per (channel, recipient, sender, key version): a sender replaces only its
    own copy, so a wrong envelope never hides a right one (the recipient checks each
    against the channel's key commitment)."""

    __tablename__ = "channel_key_envelopes"

    channel_id: Mapped[str] = mapped_column(
        ID, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    sender_device_id: Mapped[str] = mapped_column(ID, primary_key=True)
    key_version: Mapped[int] = mapped_column(
        Integer, primary_key=True, default=1, server_default=text("1")
    )
    # The sending device's user, kept with the row so that the preference of the default
    # read holds after that device is revoked. NULL only for envelopes stored before
    # revision 0004 whose sending device was already gone.
    sender_user_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    sender_public_key: Mapped[str] = mapped_column(String(44))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
