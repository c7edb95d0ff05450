from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dialtone.db.models import ChannelKeyEnvelope, DirectoryKeyEnvelope
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.devices import DeviceRepository
from dialtone.db.repositories.keys import KeyEnvelopeRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Forbidden, InvalidInput, NotFound
from dialtone.security.keys import is_public_key
from dialtone.services.context import Caller, ServerContext
from dialtone.services.users import require_trusted


@dataclass(frozen=True, slots=True)
class NewEnvelope:
    """A key sealed by one device for another (``sender_*`` is the sealing device)."""

    device_id: str
    sender_device_id: str
    sender_public_key: str
    envelope: str


class KeyService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.keys = KeyEnvelopeRepository(uow.session)
        self.devices = DeviceRepository(uow.session)
        self.channels = ChannelRepository(uow.session)

    async def _check(self, caller: Caller, envelopes: Sequence[NewEnvelope]) -> None:
        if not envelopes:
            raise InvalidInput("envelopes must not be empty", code="invalid_input")
        for item in envelopes:
            if item.sender_device_id != caller.device_id:
                raise Forbidden(
                    "sender_device_id must be the calling device", code="sender_mismatch"
                )
            if not is_public_key(item.sender_public_key):
                raise InvalidInput(
                    "sender_public_key must be standard base64 of a 32-byte X25519 key",
                    code="invalid_public_key",
                )
        wanted = [item.device_id for item in envelopes]
        known = await self.devices.existing_ids(wanted)
        missing = sorted(set(wanted) - known)
        if missing:
            raise InvalidInput(f"unknown device: {missing[0]}", code="unknown_device")

    async def channel_key(self, caller: Caller, channel_id: str) -> ChannelKeyEnvelope:
        if not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        envelope = await self.keys.channel_envelope(channel_id, caller.device_id)
        if envelope is None:
            raise NotFound("no key envelope for this device", code="envelope_not_found")
        return envelope

    async def put_channel_keys(
        self, caller: Caller, channel_id: str, envelopes: Sequence[NewEnvelope]
    ) -> None:
        if not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        await self._check(caller, envelopes)
        now = self.ctx.clock()
        await self.keys.put_channel_envelopes(
            [
                ChannelKeyEnvelope(
                    channel_id=channel_id,
                    device_id=item.device_id,
                    sender_device_id=item.sender_device_id,
                    sender_public_key=item.sender_public_key,
                    envelope=item.envelope,
                    created_at=now,
                )
                for item in envelopes
            ]
        )

    async def directory_key(self, caller: Caller) -> DirectoryKeyEnvelope | None:
        require_trusted(caller)
        return await self.keys.directory_envelope(caller.device_id)

    async def put_directory_keys(self, caller: Caller, envelopes: Sequence[NewEnvelope]) -> None:
        require_trusted(caller)
        await self._check(caller, envelopes)
        now = self.ctx.clock()
        await self.keys.put_directory_envelopes(
            [
                DirectoryKeyEnvelope(
                    device_id=item.device_id,
                    sender_device_id=item.sender_device_id,
                    sender_public_key=item.sender_public_key,
                    envelope=item.envelope,
                    created_at=now,
                )
                for item in envelopes
            ]
        )
