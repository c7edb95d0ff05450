from __future__ import annotations

from typing import Annotated

import msgspec

from dialtone.schemas.common import Commitment, Envelope, Id, PublicKeyText

MAX_ENVELOPES = 1000


class EnvelopeIn(msgspec.Struct, forbid_unknown_fields=True):
    device_id: Id
    sender_device_id: Id
    sender_public_key: PublicKeyText
    envelope: Envelope


class ChannelEnvelopeIn(EnvelopeIn, forbid_unknown_fields=True):
    # The key version sealed (default: the channel's current one).
    key_version: Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31)] | None = None


EnvelopeList = Annotated[list[EnvelopeIn], msgspec.Meta(max_length=MAX_ENVELOPES)]
ChannelEnvelopeList = Annotated[list[ChannelEnvelopeIn], msgspec.Meta(max_length=MAX_ENVELOPES)]


class ChannelKeysIn(msgspec.Struct, forbid_unknown_fields=True):
    channel_id: Id
    envelopes: ChannelEnvelopeList


class DirectoryKeysIn(msgspec.Struct, forbid_unknown_fields=True):
    envelopes: EnvelopeList


class EnvelopesStored(msgspec.Struct, omit_defaults=True):
    """``{"status": "ok"}`` as ever; ``kept`` lists the devices whose default read still
    answers another sender's, preferred envelope rather than the one just stored (omitted
    when there are none)."""

    status: str
    kept: list[str] = msgspec.field(default_factory=list)


class ChannelKeyOut(msgspec.Struct):
    channel_id: str
    device_id: str
    sender_device_id: str
    sender_public_key: str
    envelope: str
    created_at: str
    key_version: int = 1


class ChannelEnvelopeOut(msgspec.Struct):
    """One item of ``GET /channels/keys?all=1``."""

    sender_device_id: str
    sender_user_id: str | None
    sender_public_key: str
    envelope: str
    key_version: int
    created_at: str


class ChannelKeysOut(msgspec.Struct, omit_defaults=True):
    channel_id: str
    device_id: str
    envelopes: list[ChannelEnvelopeOut]
    # Issue 16, only when the request named a ``key_version``: that version and its
    # commitment (absent when unknown), to check an older key against.
    key_version: int | None = None
    key_commitment: str | None = None


class DirectoryKeyOut(msgspec.Struct):
    device_id: str
    sender_device_id: str
    sender_public_key: str
    envelope: str
    created_at: str


class DirectoryEnvelopeOut(msgspec.Struct):
    """One item of ``GET /directory/keys?all=1``."""

    sender_device_id: str
    sender_user_id: str | None
    sender_public_key: str
    envelope: str
    created_at: str


class DirectoryKeysOut(msgspec.Struct):
    device_id: str
    envelopes: list[DirectoryEnvelopeOut]


class DirectoryCommitmentIn(msgspec.Struct, forbid_unknown_fields=True):
    key_commitment: Commitment


class DirectoryCommitmentOut(msgspec.Struct):
    directory_key_commitment: str


class KeysHeldOut(msgspec.Struct):
    """``GET /keys/held``: the channels (current key version) and whether the directory key
    for which the device holds an envelope sent by a device of its own user."""

    device_id: str
    channels: list[str]
    directory: bool
