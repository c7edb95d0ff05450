from __future__ import annotations

from typing import Annotated

import msgspec

from dialtone.schemas.common import Commitment, Id

# A channel key version: 1 for the key a channel is made with, one more per rotation.
KeyVersion = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class RotateIn(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /channels/rotate``: the new key's version (the current one + 1) and its
    commitment, made by the device that made the key."""

    channel_id: Id
    key_version: KeyVersion
    key_commitment: Commitment
