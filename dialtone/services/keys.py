from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dialtone.db.models import ChannelKeyEnvelope, DirectoryKeyEnvelope
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.devices import DeviceRepository
from dialtone.db.repositories.keys import EnvelopeWriter, KeyEnvelopeRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import Forbidden, InvalidInput, NotFound
from dialtone.security.keys import is_public_key
from dialtone.services.auth import rate_limit
from dialtone.services.context import Caller, ServerContext
from dialtone.services.users import require_trusted

log = logging.getLogger("dialtone.security")


def unknown_device(device_id: str) -> InvalidInput:
    return InvalidInput(f"unknown device: {device_id}", code="unknown_device")


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
        wanted: set[str] = set()
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
            if item.device_id in wanted:
                raise InvalidInput(
                    f"device_id appears twice in one batch: {item.device_id}",
                    code="duplicate_device",
                )
            wanted.add(item.device_id)
        known = await self.devices.existing_ids(list(wanted))
        missing = sorted(wanted - known)
        if missing:
            raise unknown_device(missing[0])

    async def channel_key(self, caller: Caller, channel_id: str) -> ChannelKeyEnvelope:
        if not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        envelope = await self.keys.channel_envelope(channel_id, caller.device_id)
        if envelope is None:
            raise NotFound("no key envelope for this device", code="envelope_not_found")
        return envelope

    async def put_channel_keys(
        self, caller: Caller, channel_id: str, envelopes: Sequence[NewEnvelope]
    ) -> list[str]:
        """Store the envelopes; the device ids whose existing envelope was kept (see
        ``put_directory_keys``)."""
        await rate_limit(self.ctx, "envelope", caller.user_id)
        if not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        await self._check(caller, envelopes)
        now = self.ctx.clock()
        rows = [
            {"channel_id": channel_id, **self._row(item), "created_at": now} for item in envelopes
        ]
        try:
            written = await self.keys.put_channel_envelopes(rows, _writer(caller))
        except ReferenceGone:
            # Deleted by a concurrent request: answer as if this one had come second.
            await self.uow.session.rollback()
            if not await self.channels.exists(channel_id):
                raise NotFound("channel not found", code="channel_not_found") from None
            raise await self._vanished_device(envelopes) from None
        return self._kept(caller, envelopes, written, "channel", channel_id)

    async def directory_key(self, caller: Caller) -> DirectoryKeyEnvelope | None:
        require_trusted(caller)
        return await self.keys.directory_envelope(caller.device_id)

    async def put_directory_keys(
        self, caller: Caller, envelopes: Sequence[NewEnvelope]
    ) -> list[str]:
        """Store the envelopes in one statement.

        An existing envelope is replaced only by the recipient's own user, its original
        sender (device or user) or an admin. Anyone else's copy is left unchanged and its
        device id returned (the request still succeeds: every member re-shares every key).
        """
        require_trusted(caller)
        await rate_limit(self.ctx, "envelope", caller.user_id)
        await self._check(caller, envelopes)
        now = self.ctx.clock()
        rows = [{**self._row(item), "created_at": now} for item in envelopes]
        try:
            written = await self.keys.put_directory_envelopes(rows, _writer(caller))
        except ReferenceGone:
            await self.uow.session.rollback()
            raise await self._vanished_device(envelopes) from None
        return self._kept(caller, envelopes, written, "directory", None)

    @staticmethod
    def _row(item: NewEnvelope) -> dict[str, Any]:
        return {
            "device_id": item.device_id,
            "sender_device_id": item.sender_device_id,
            "sender_public_key": item.sender_public_key,
            "envelope": item.envelope,
        }

    async def _vanished_device(self, envelopes: Sequence[NewEnvelope]) -> InvalidInput:
        wanted = [item.device_id for item in envelopes]
        missing = sorted(set(wanted) - await self.devices.existing_ids(wanted))
        return unknown_device(missing[0] if missing else wanted[0])

    @staticmethod
    def _kept(
        caller: Caller,
        envelopes: Sequence[NewEnvelope],
        written: set[str],
        kind: str,
        channel_id: str | None,
    ) -> list[str]:
        kept = [item.device_id for item in envelopes if item.device_id not in written]
        if kept:
            # Ids only: never an envelope. Info, not warning: existing clients re-share
            # every key from every member every 30 s, so most of these are routine.
            log.info(
                "envelope replacement refused",
                extra={
                    "event": "envelope_kept",
                    "kind": kind,
                    "user_id": caller.user_id,
                    "device_id": caller.device_id,
                    "channel_id": channel_id,
                    "kept": kept,
                },
            )
        return kept


def _writer(caller: Caller) -> EnvelopeWriter:
    return EnvelopeWriter(caller.user_id, caller.device_id, caller.is_admin)
