"""Server → client WebSocket events (tagged on "type"). Encoded once, sent to many."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from dialtone.schemas.channels import ChannelOut
from dialtone.schemas.common import (
    _NO_NUL,
    ClientMessageId,
    Id,
    MessageBody,
    NameCipher,
    trimmed,
)

# SDP and ICE text; the 64 KiB frame limit bounds it first.
Signal = Annotated[str, msgspec.Meta(min_length=1, max_length=60 * 1024, pattern=_NO_NUL)]


class Event(msgspec.Struct, tag_field="type"):
    pass


class ChannelMessageNew(Event, tag="channel.message.new", omit_defaults=True):
    message_id: str
    channel_id: str
    sender: str
    sender_name_enc: str
    body: str
    sent_at: str
    # Added for catch-up and safe retries (issue 20); absent where unknown, so a frame
    # of a message stored without them reads exactly as before.
    seq: int | None = None  # the message's place in its channel
    client_message_id: str | None = None  # the sender's id for its send, echoed
    # Issue 16: the channel key version the body was sealed with; absent means 1.
    key_version: int = 1
    # Issue 17: the ids of the files the message carries, in order; absent when none.
    attachments: list[str] = msgspec.field(default_factory=list)


class ChannelUpdated(Event, tag="channel.updated"):
    channel_id: str
    channel_name_enc: str
    # Additive (issue 15): what a client checks a handed-on channel key against.
    key_commitment: str | None = None
    key_version: int = 1
    # Additive (issue 16).
    private: bool = False
    direct: bool = False
    # Additive (issue 17).
    image_file_id: str | None = None


class ChannelDeleted(Event, tag="channel.deleted"):
    channel_id: str


# ---------------------------------------------------------------- private rooms (issue 16)
# Delivered only to the room's members (and, for a removal, to the removed user).


class MemberOut(msgspec.Struct):
    user_id: str
    role: str


class ChannelCreated(Event, tag="channel.created"):
    """A private room was made: its members learn of it (nobody else does)."""

    channel: ChannelOut
    members: list[MemberOut]


class ChannelMemberAdded(Event, tag="channel.member.added"):
    channel_id: str
    user_id: str
    role: str


class ChannelMemberRemoved(Event, tag="channel.member.removed"):
    channel_id: str
    user_id: str


class ChannelRekeyRequired(Event, tag="channel.rekey_required"):
    """A member left or lost a device: an owner's (or admin member's) device should rotate
    the key that replaces ``key_version``."""

    channel_id: str
    key_version: int


class UserProfileUpdated(Event, tag="user.profile.updated"):
    sender: str


class DeviceJoined(Event, tag="device.joined"):
    sender: str
    device_id: str


class DeviceRevoked(Event, tag="device.revoked"):
    sender: str
    device_id: str


class ChannelMessageDeleted(Event, tag="channel.message.deleted"):
    """Messages deleted by their sender or a moderator: drop them from view and cache."""

    channel_id: str
    message_ids: list[str]


class ServerAnnouncement(Event, tag="server.announcement"):
    """Plaintext from the operator (not end-to-end encrypted, and marked so)."""

    text: str
    alert: bool
    sent_at: str
    plaintext: bool = True


class ServerHello(Event, tag="server.hello"):
    """Sent to each new socket right after the voice snapshot: who you are, the server's
    title and its welcome message ("" when none is set)."""

    user_id: str
    device_id: str
    is_admin: bool
    is_moderator: bool
    is_trusted: bool
    server_title: str
    welcome_message: str


class ServerInfoUpdated(Event, tag="server.info.updated", omit_defaults=True):
    """The public server information changed (an operator's settings update, or the
    directory key commitment being set)."""

    server_title: str
    welcome_message: str
    registration_open: bool
    # Additive (issue 15), as in GET /server/info; left out while unset, so that until
    # then the event is exactly what existing clients know.
    directory_key_commitment: str | None = None


class PresenceUpdated(Event, tag="presence.updated"):
    """A user came online (their first socket anywhere in the cluster) or went offline
    (their last one closed). Each node tells its own sockets, other users' only, when its
    view of the cluster changes; never carried by the broker."""

    sender: str
    online: bool


class UserRoleUpdated(Event, tag="user.role.updated"):
    """An admin changed a user's roles (PATCH /admin/users/{id}, the admin command line)."""

    sender: str
    is_admin: bool
    is_moderator: bool


class SessionsRevoked(Event, tag="sessions.revoked"):
    """Internal control event, never sent to clients: close the sockets of revoked sessions.

    ``token_hash`` None means every session of the user (logout everywhere).
    """

    user_id: str
    token_hash: str | None = None


# ---------------------------------------------------------------- voice (server → client)


class VoicePresenceSnapshot(Event, tag="voice.presence.snapshot"):
    voice_rooms: dict[str, list[str]]


class VoiceRoster(Event, tag="voice_roster"):
    channel_id: str
    users: list[str]


class VoicePresence(Event, tag="voice.presence"):
    channel_id: str
    sender: str
    active: bool


class VoiceJoined(Event, tag="voice_join"):
    channel_id: str
    sender: str


class VoiceLeft(Event, tag="voice_leave"):
    channel_id: str
    sender: str


class WebrtcOfferOut(Event, tag="webrtc_offer"):
    channel_id: str
    sender: str
    recipient: str
    sdp: str


class WebrtcAnswerOut(Event, tag="webrtc_answer"):
    channel_id: str
    sender: str
    recipient: str
    sdp: str


class IceCandidateOut(Event, tag="ice_candidate"):
    channel_id: str
    sender: str
    recipient: str
    candidate: str


class ErrorEvent(Event, tag="error"):
    code: str
    message: str


Relayed = WebrtcOfferOut | WebrtcAnswerOut | IceCandidateOut


# ---------------------------------------------------------------- internal control events
# Carried by the broker between nodes; the hub acts on them and never sends them as-is.


class VoiceMembership(Event, tag="internal.voice.membership"):
    """A connection entered (``joined``) or left a voice room."""

    channel_id: str
    user_id: str
    conn_id: str
    joined: bool


class VoiceRelay(Event, tag="internal.voice.relay"):
    """An offer/answer/candidate for ``payload.recipient``'s sockets in the room."""

    origin_conn_id: str
    payload: Relayed


class SocketOpened(Event, tag="internal.socket.opened"):
    """Presence across nodes: a socket of ``user_id`` opened (conn ids start with the node id)."""

    user_id: str
    conn_id: str
    # Given only for a socket of an admin or moderator: no address ban may cover it, on
    # whichever node the ban is asked for (services/admin.py).
    staff_address: str = ""


class SocketClosed(Event, tag="internal.socket.closed"):
    user_id: str
    conn_id: str


class NodeAlive(Event, tag="internal.node.alive"):
    """Heartbeat: a node that stops sending it is presumed dead and its sockets forgotten."""

    node_id: str


class NodeStateRequest(Event, tag="internal.node.state_request"):
    """A node that just started asks the others for their sockets and voice seats."""

    node_id: str


class NodeState(Event, tag="internal.node.state"):
    node_id: str
    sockets: list[tuple[str, str]]  # (user_id, conn_id)
    voice: list[tuple[str, str, str]]  # (channel_id, user_id, conn_id)
    staff_addresses: list[tuple[str, str, str]] = []  # (user_id, conn_id, address)


class AdminControl(Event):
    """Administration carried between nodes; the hub hands these to its admin handler."""


class DisconnectUsers(AdminControl, tag="internal.admin.disconnect"):
    """Close every socket of these users (kick, ban, lock) with ``code`` and ``reason``."""

    user_ids: list[str]
    reason: str
    code: int = 1008


class BanAdded(AdminControl, tag="internal.admin.ban_added"):
    """A ban now applies on every node; sockets it covers are closed."""

    id: str
    user_id: str | None
    address: str | None
    expires_at: str | None


class BanRemoved(AdminControl, tag="internal.admin.ban_removed"):
    id: str


class SettingsChanged(AdminControl, tag="internal.admin.settings"):
    """Live settings (the whole effective set), applied by every node as it arrives."""

    values: dict[str, str | int | float | bool]


class DirectoryCommitmentSet(AdminControl, tag="internal.admin.directory_commitment"):
    """The directory key commitment was set: every node serves it from now on."""

    key_commitment: str


class BlockChanged(Event, tag="internal.block.changed"):
    """``blocker_id`` blocked (``blocked``) or unblocked ``blocked_id``: every node that
    holds the blocker's sockets updates its delivery filter (dialtone.realtime.blocks)."""

    blocker_id: str
    blocked_id: str
    blocked: bool


class DeliveryGap(Event, tag="internal.delivery_gap"):
    """A node could not hand events to Redis: the others close their sockets so that
    their clients catch up (handled by the broker, never delivered to a hub)."""

    node_id: str
    # Wall-clock milliseconds of the node's last failed publish: a socket opened later
    # caught up on its own when it opened.
    until_ms: int


INTERNAL_EVENTS: tuple[type[Event], ...] = (
    SessionsRevoked,
    VoiceMembership,
    VoiceRelay,
    SocketOpened,
    SocketClosed,
    NodeAlive,
    NodeStateRequest,
    NodeState,
    DisconnectUsers,
    BanAdded,
    BanRemoved,
    SettingsChanged,
    DirectoryCommitmentSet,
    DeliveryGap,
    BlockChanged,
)

AnyEvent = (
    ChannelMessageNew
    | ChannelUpdated
    | ChannelDeleted
    | ChannelCreated
    | ChannelMemberAdded
    | ChannelMemberRemoved
    | ChannelRekeyRequired
    | UserProfileUpdated
    | DeviceJoined
    | DeviceRevoked
    | SessionsRevoked
    | VoicePresenceSnapshot
    | VoiceRoster
    | VoicePresence
    | VoiceJoined
    | VoiceLeft
    | WebrtcOfferOut
    | WebrtcAnswerOut
    | IceCandidateOut
    | ErrorEvent
    | VoiceMembership
    | VoiceRelay
    | SocketOpened
    | SocketClosed
    | NodeAlive
    | NodeStateRequest
    | NodeState
    | ChannelMessageDeleted
    | ServerAnnouncement
    | ServerHello
    | ServerInfoUpdated
    | PresenceUpdated
    | UserRoleUpdated
    | DisconnectUsers
    | BanAdded
    | BanRemoved
    | SettingsChanged
    | DirectoryCommitmentSet
    | DeliveryGap
    | BlockChanged
)


# ---------------------------------------------------------------- client → server frames
# One tagged union, decoded by one decoder. Unknown fields are ignored rather than refused:
# existing clients send one envelope struct for every frame type.


class ClientFrame(msgspec.Struct, tag_field="type"):
    pass


class ChannelMessageSend(ClientFrame, tag="channel.message.send"):
    channel_id: Id
    body: MessageBody
    sender_name_enc: NameCipher
    # Optional: a send repeated with the same id is answered with the stored message.
    client_message_id: ClientMessageId | None = None
    # Issue 16: the channel key version the body is sealed with (absent: 1). Above the
    # channel's current version: error event key_version_conflict.
    key_version: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] = 1
    # Issue 17: ids of the sender's own uploads to this channel, not yet carried by a
    # message (error event invalid_attachment otherwise).
    attachments: Annotated[list[Id], msgspec.Meta(max_length=10)] | None = None

    def __post_init__(self) -> None:
        self.body = trimmed(self.body, "body")
        self.sender_name_enc = trimmed(self.sender_name_enc, "sender_name_enc")


class VoiceJoin(ClientFrame, tag="voice_join"):
    channel_id: Id


class VoiceLeave(ClientFrame, tag="voice_leave"):
    channel_id: Id


class WebrtcOffer(ClientFrame, tag="webrtc_offer"):
    channel_id: Id
    recipient: Id
    sdp: Signal


class WebrtcAnswer(ClientFrame, tag="webrtc_answer"):
    channel_id: Id
    recipient: Id
    sdp: Signal


class IceCandidate(ClientFrame, tag="ice_candidate"):
    channel_id: Id
    recipient: Id
    candidate: Signal


AnyClientFrame = (
    ChannelMessageSend | VoiceJoin | VoiceLeave | WebrtcOffer | WebrtcAnswer | IceCandidate
)
CLIENT_FRAME_TYPES = frozenset(
    {
        "channel.message.send",
        "voice_join",
        "voice_leave",
        "webrtc_offer",
        "webrtc_answer",
        "ice_candidate",
    }
)


_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(list[AnyEvent])
frame_decoder = msgspec.json.Decoder(AnyClientFrame)


def encode_event(event: Event) -> str:
    """JSON text of a server event, built once per event and shared by every socket."""
    return _encoder.encode(event).decode()


def encode_events(events: Sequence[Event]) -> bytes:
    return _encoder.encode(events)
