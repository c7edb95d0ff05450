from __future__ import annotations

import msgspec

from dialtone.schemas.common import Id, NameCipher


class ChannelCreate(msgspec.Struct, forbid_unknown_fields=True):
    name_enc: NameCipher


class ChannelUpdate(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    name_enc: NameCipher


class ChannelOut(msgspec.Struct):
    id: str
    name_enc: str
    created_by: str
    created_at: str


class ChannelEnvelope(msgspec.Struct):
    channel: ChannelOut


class ChannelList(msgspec.Struct):
    channels: list[ChannelOut]
