from __future__ import annotations

import msgspec


class InviteOut(msgspec.Struct):
    token: str
    expires_at: str
    # Added for administration (issue 10): the id GET/DELETE /admin/invites use.
    id: str = ""
    max_uses: int = 1
