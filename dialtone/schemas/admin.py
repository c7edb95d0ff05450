"""Wire contract of the administration API (``/admin/*``, moderation, server info)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from dialtone.schemas.common import _NO_NUL, Id

Comment = Annotated[str, msgspec.Meta(max_length=500, pattern=_NO_NUL)]
AddressText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)]
TimeText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)]
AnnouncementText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=_NO_NUL)]


class VoiceRoomStats(msgspec.Struct):
    channel_id: str
    members: int


class StatsOut(msgspec.Struct):
    users: int
    online_users: int
    sockets: int
    channels: int
    messages: int
    voice_rooms: list[VoiceRoomStats]
    uptime_seconds: int
    version: str
    nodes: list[str]
    bans: int
    # Messages sent in the last 60 seconds, all nodes, counted up to RECENT_MESSAGES_CAP.
    messages_last_minute: int = 0
    # Issue 17: uploaded files stored on the server, and their bytes.
    files: int = 0
    storage_bytes: int = 0


class AdminUserOut(msgspec.Struct):
    id: str
    created_at: str
    is_admin: bool
    is_moderator: bool
    is_trusted: bool
    is_locked: bool
    device_count: int
    online: bool
    last_seen_at: str | None
    storage_bytes: int = 0  # issue 17: bytes of the files this user uploaded


class AdminUserPage(msgspec.Struct):
    users: list[AdminUserOut]
    next_cursor: str | None


class UserFlagsIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    is_admin: bool | None = None
    is_moderator: bool | None = None
    is_trusted: bool | None = None
    is_locked: bool | None = None


class DeletedCount(msgspec.Struct):
    deleted: int


class BanIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id | None = None
    address: AddressText | None = None
    expires_at: TimeText | None = None
    duration_seconds: Annotated[int, msgspec.Meta(ge=1, le=100 * 365 * 24 * 3600)] | None = None
    comment: Comment = ""


class BanOut(msgspec.Struct):
    id: str
    user_id: str | None
    address: str | None
    expires_at: str | None
    comment: str
    created_by: str
    created_at: str
    active: bool


class BanPage(msgspec.Struct):
    bans: list[BanOut]
    next_cursor: str | None


class InviteCreateIn(msgspec.Struct, forbid_unknown_fields=True):
    ttl_seconds: int | None = None
    max_uses: int | None = None


class AdminInviteOut(msgspec.Struct):
    id: str
    created_at: str
    expires_at: str
    uses: int
    max_uses: int
    state: str
    revoked_at: str | None


class InvitePage(msgspec.Struct):
    invites: list[AdminInviteOut]
    next_cursor: str | None


class LogEntryOut(msgspec.Struct):
    id: int
    at: str
    level: str
    topic: str
    user_id: str | None
    device_id: str | None
    actor_id: str | None
    address: str | None
    message: str


class LogPage(msgspec.Struct):
    entries: list[LogEntryOut]
    next_cursor: str | None


class SettingsOut(msgspec.Struct):
    # Values are strings, whole numbers, numbers or booleans (see docs/API.md); typed Any
    # because a JSON schema cannot tell a whole number from a number in a oneOf.
    settings: dict[str, Any]


class AnnounceIn(msgspec.Struct, forbid_unknown_fields=True):
    text: AnnouncementText
    alert: bool = False


class DrainOut(msgspec.Struct):
    status: str
    closed_sockets: int


class ServerInfoOut(msgspec.Struct):
    server_title: str
    welcome_message: str
    registration_open: bool
    version: str
    directory_key_commitment: str | None = None


class StaffMember(msgspec.Struct):
    user_id: str
    is_admin: bool
    is_moderator: bool


class ModeratorList(msgspec.Struct):
    moderators: list[StaffMember]


class DeletionOut(msgspec.Struct):
    message_id: str
    channel_id: str
    sender_id: str
    sent_at: str
    deleted_at: str
    deleted_by: str | None


class DeletionPage(msgspec.Struct):
    channel_id: str
    deletions: list[DeletionOut]
    next_cursor: str | None
