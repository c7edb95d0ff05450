from __future__ import annotations

import msgspec

from dialtone.schemas.common import InviteToken, Password, PublicKeyText, Username


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    public_key: PublicKeyText
    invite_token: InviteToken


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    public_key: PublicKeyText


class AuthOut(msgspec.Struct):
    token: str
    user_id: str
    device_id: str
    expires_at: str
    username: str
    device_public_key: str
    is_admin: bool
    is_trusted: bool
    # Added for administration (issue 10); older clients ignore it.
    is_moderator: bool = False
