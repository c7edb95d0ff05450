from __future__ import annotations

from typing import Literal

import msgspec

from dialtone.schemas.common import Commitment, Id, NameCipher, trimmed


class ChannelCreate(msgspec.Struct, forbid_unknown_fields=True):
    name_enc: NameCipher
    key_commitment: Commitment | None = None
    private: bool = False  # issue 16: a room only its members see

    def __post_init__(self) -> None:
        self.name_enc = trimmed(self.name_enc, "name_enc")


class ChannelUpdate(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    name_enc: NameCipher

    def __post_init__(self) -> None:
        self.name_enc = trimmed(self.name_enc, "name_enc")


class CommitmentIn(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    key_commitment: Commitment


class ChannelImageIn(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    file_id: Id | None  # an upload of the caller's to this channel; null clears the image


class ChannelOut(msgspec.Struct):
    id: str
    name_enc: str
    created_by: str
    created_at: str
    key_commitment: str | None = None
    key_version: int = 1
    # Additive (issue 16), always present: private rooms, direct messages, rotation.
    private: bool = False
    direct: bool = False
    role: str | None = None  # the caller's role in a private room: "owner" | "member"
    peer_user_id: str | None = None  # a direct-message room's other user, for the caller
    rekey_required: bool = False
    image_file_id: str | None = None  # additive (issue 17): the channel's encrypted picture


class ChannelEnvelope(msgspec.Struct):
    channel: ChannelOut


class ChannelList(msgspec.Struct):
    channels: list[ChannelOut]


# ---------------------------------------------------------------- members (issue 16)

Role = Literal["owner", "member"]


class MemberIn(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    user_id: Id
    role: Role = "member"


class MemberItem(msgspec.Struct):
    user_id: str
    role: str


class MemberEnvelope(msgspec.Struct):
    member: MemberItem


class MemberList(msgspec.Struct):
    members: list[MemberItem]
    member_count: int
