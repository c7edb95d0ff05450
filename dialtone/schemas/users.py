from __future__ import annotations

import msgspec

from dialtone.schemas.common import NameCipher, Username


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username


class UserOut(msgspec.Struct):
    id: str
    username: str
    created_at: str


class ProfileIn(msgspec.Struct, forbid_unknown_fields=True):
    name_enc: NameCipher


class ProfileOut(msgspec.Struct):
    user_id: str
    name_enc: str
    updated_at: str


class ProfileList(msgspec.Struct):
    profiles: list[ProfileOut]
