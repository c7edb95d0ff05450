"""Direct messages, blocks and the do-not-disturb preference (issue 16)."""

from __future__ import annotations

from typing import Literal

import msgspec

from dialtone.schemas.common import Id

DirectMessages = Literal["anyone", "trusted", "nobody"]


class DirectIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id


class DirectStatusOut(msgspec.Struct):
    allowed: bool
    channel_id: str | None


class PreferencesIn(msgspec.Struct, forbid_unknown_fields=True):
    direct_messages: DirectMessages


class PreferencesOut(msgspec.Struct):
    direct_messages: str


class BlockIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id


class BlockOut(msgspec.Struct):
    user_id: str
    created_at: str


class BlockList(msgspec.Struct):
    blocks: list[BlockOut]
