from __future__ import annotations

import msgspec

from dialtone.schemas.common import Id, PublicKeyText


class DeviceCreate(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id
    public_key: PublicKeyText


class DeviceOut(msgspec.Struct):
    id: str
    user_id: str
    public_key: str
    created_at: str


class DeviceKey(msgspec.Struct):
    device_id: str
    public_key: str


class UserDeviceKeys(msgspec.Struct):
    user_id: str
    keys: list[DeviceKey]


class AnyDeviceKey(msgspec.Struct):
    user_id: str
    device_id: str
    public_key: str


class AllDeviceKeys(msgspec.Struct):
    keys: list[AnyDeviceKey]


class OwnDevice(msgspec.Struct):
    """One of the caller's devices; ``current`` marks the one making the request."""

    id: str
    public_key: str
    created_at: str
    last_seen_at: str
    current: bool


class OwnDeviceList(msgspec.Struct):
    devices: list[OwnDevice]
