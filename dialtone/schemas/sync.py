"""``POST /sync``: one catch-up call over many channels."""

from __future__ import annotations

from typing import Annotated

import msgspec

from dialtone.schemas.admin import DeletionOut
from dialtone.schemas.channels import ChannelOut
from dialtone.schemas.common import _NO_NUL, Id
from dialtone.schemas.messages import MessageOut

MAX_SYNC_CHANNELS = 200
MAX_SYNC_LIMIT = 200

TimeText = Annotated[str, msgspec.Meta(max_length=64, pattern=_NO_NUL)]


class SyncChannelIn(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    last_message_id: Id | None = None
    last_deletion_at: TimeText | None = None


class SyncIn(msgspec.Struct, forbid_unknown_fields=True):
    channels: Annotated[list[SyncChannelIn], msgspec.Meta(max_length=MAX_SYNC_CHANNELS)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_SYNC_LIMIT)] | None = None


class SyncChannelOut(msgspec.Struct):
    channel_id: str
    messages: list[MessageOut]
    more: bool
    deleted: list[DeletionOut]
    # Additive to the contract: more deletions than ``limit`` since last_deletion_at;
    # page the rest with GET /channels/messages/deleted.
    deleted_more: bool = False


class SyncOut(msgspec.Struct):
    channels: list[SyncChannelOut]
    gone: list[str]
    added: list[ChannelOut]
