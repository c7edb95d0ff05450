"""Server → client WebSocket events (tagged on "type"). Encoded once, sent to many."""

from __future__ import annotations

import msgspec


class Event(msgspec.Struct, tag_field="type"):
    pass


class ChannelMessageNew(Event, tag="channel.message.new"):
    message_id: str
    channel_id: str
    sender: str
    sender_name_enc: str
    body: str
    sent_at: str


class ChannelUpdated(Event, tag="channel.updated"):
    channel_id: str
    channel_name_enc: str


class ChannelDeleted(Event, tag="channel.deleted"):
    channel_id: str


class UserProfileUpdated(Event, tag="user.profile.updated"):
    sender: str


class DeviceJoined(Event, tag="device.joined"):
    sender: str
    device_id: str


class DeviceRevoked(Event, tag="device.revoked"):
    sender: str
    device_id: str


class SessionsRevoked(Event, tag="sessions.revoked"):
    """Internal control event, never sent to clients: close the sockets of revoked sessions.

    ``token_hash`` None means every session of the user (logout everywhere).
    """

    user_id: str
    token_hash: str | None = None
