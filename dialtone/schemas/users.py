from __future__ import annotations

import msgspec

from dialtone.schemas.common import NameCipher, Username, trimmed


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username


class UserOut(msgspec.Struct):
    id: str
    username: str
    created_at: str


class ProfileIn(msgspec.Struct, forbid_unknown_fields=True):
    name_enc: NameCipher

    def __post_init__(self) -> None:
        self.name_enc = trimmed(self.name_enc, "name_enc")


class ProfileOut(msgspec.Struct):
    user_id: str
    name_enc: str
    updated_at: str


class ProfileList(msgspec.Struct):
    profiles: list[ProfileOut]
