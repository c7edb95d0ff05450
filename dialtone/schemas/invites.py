from __future__ import annotations

import msgspec


class InviteOut(msgspec.Struct):
    token: str
    expires_at: str
