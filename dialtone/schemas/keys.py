from __future__ import annotations

from typing import Annotated

import msgspec

from dialtone.schemas.common import Envelope, Id, PublicKeyText

MAX_ENVELOPES = 1000


class EnvelopeIn(msgspec.Struct, forbid_unknown_fields=True):
    device_id: Id
    sender_device_id: Id
    sender_public_key: PublicKeyText
    envelope: Envelope


EnvelopeList = Annotated[list[EnvelopeIn], msgspec.Meta(max_length=MAX_ENVELOPES)]


class ChannelKeysIn(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    envelopes: EnvelopeList


class DirectoryKeysIn(msgspec.Struct, forbid_unknown_fields=True):
    envelopes: EnvelopeList


class EnvelopesStored(msgspec.Struct, omit_defaults=True):
    """``{"status": "ok"}`` as ever; ``kept`` lists the devices whose existing envelope this
    caller may not replace and that were left unchanged (omitted when there are none)."""

    status: str
    kept: list[str] = msgspec.field(default_factory=list)


class ChannelKeyOut(msgspec.Struct):
    channel_id: str
    device_id: str
    sender_device_id: str
    sender_public_key: str
    envelope: str
    created_at: str


class DirectoryKeyOut(msgspec.Struct):
    device_id: str
    sender_device_id: str
    sender_public_key: str
    envelope: str
    created_at: str
