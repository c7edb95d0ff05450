from __future__ import annotations

from typing import Annotated

import msgspec

from dialtone.schemas.common import Id

MAX_PRESENCE_IDS = 5000


class PresenceIn(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_PRESENCE_IDS)]


class PresenceOut(msgspec.Struct):
    statuses: dict[str, bool]
    admins: dict[str, bool]
