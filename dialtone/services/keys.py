from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dialtone.db.models import Channel
from dialtone.db.repositories.admin import SettingRepository
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.devices import DeviceRepository
from dialtone.db.repositories.keys import KeyEnvelopeRepository, StoredEnvelope
from dialtone.db.repositories.members import MemberRepository
from dialtone.db.repositories.rotation import KeyRotationRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import Conflict, Forbidden, InvalidInput, NotFound
from dialtone.schemas.events import DirectoryCommitmentSet, ServerInfoUpdated
from dialtone.security.keys import is_public_key
from dialtone.services.auth import rate_limit
from dialtone.services.channels import checked_commitment
from dialtone.services.context import DIRECTORY_COMMITMENT, Caller, ServerContext
from dialtone.services.rotation import key_version_conflict
from dialtone.services.users import require_trusted

log = logging.getLogger("dialtone.security")


def unknown_device(device_id: str) -> InvalidInput:
    return InvalidInput(f"unknown device: {device_id}", code="unknown_device")


@dataclass(frozen=True, slots=True)
class NewEnvelope:
    """A key sealed by one device for another (``sender_*`` is the sealing device).
    ``key_version``: channel keys only; None means the channel's current version."""

    device_id: str
    sender_device_id: str
    sender_public_key: str
    envelope: str
    key_version: int | None = None


class KeyService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.keys = KeyEnvelopeRepository(uow.session)
        self.devices = DeviceRepository(uow.session)
        self.channels = ChannelRepository(uow.session)
        self.settings = SettingRepository(uow.session)
        self.members = MemberRepository(uow.session)
        self.rotation = KeyRotationRepository(uow.session)

    async def _check(
        self,
        caller: Caller,
        envelopes: Sequence[NewEnvelope],
        current: int | None = None,
        private: bool = False,
    ) -> None:
        """``current``: the channel's key version (None for the directory key);
        ``private``: the channel is a private room (a version above the current one is a
        conflict there: a rotation that did not happen, or not yet)."""
        if not envelopes:
            raise InvalidInput("envelopes must not be empty", code="invalid_input")
        wanted: set[str] = set()
        seen: set[tuple[str, int | None]] = set()
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
            version = None
            if current is not None:
                version = current if item.key_version is None else item.key_version
                if private and version > current:
                    raise key_version_conflict()
                if not 1 <= version <= current:
                    raise InvalidInput(
                        f"key_version must be between 1 and the channel's current {current}",
                        code="invalid_key_version",
                    )
            if (item.device_id, version) in seen:
                raise InvalidInput(
                    f"device_id appears twice in one batch: {item.device_id}",
                    code="duplicate_device",
                )
            seen.add((item.device_id, version))
            wanted.add(item.device_id)
        known = await self.devices.existing_ids(list(wanted))
        missing = sorted(wanted - known)
        if missing:
            raise unknown_device(missing[0])

    async def _channel(self, caller: Caller, channel_id: str) -> Channel:
        """The channel if the caller may see it (a private room: only its members)."""
        channel = await self.members.visible(channel_id, caller.user_id)
        if channel is None:
            raise NotFound("channel not found", code="channel_not_found")
        return channel

    @staticmethod
    def _version(channel: Channel, key_version: int | None) -> int:
        """The key version a read asks for: the current one unless given."""
        if key_version is None:
            return channel.key_version
        if not 1 <= key_version <= channel.key_version:
            raise InvalidInput(
                f"key_version must be between 1 and the channel's current {channel.key_version}",
                code="invalid_key_version",
            )
        return key_version

    async def channel_keys(
        self, caller: Caller, channel_id: str, key_version: int | None = None
    ) -> tuple[list[StoredEnvelope], str | None]:
        """Every envelope of one key version (the current one by default) for the calling
        device, preferred first (see db/repositories/keys.py), possibly none; and that
        version's commitment."""
        channel = await self._channel(caller, channel_id)
        version = self._version(channel, key_version)
        found = await self.keys.channel_envelopes(
            channel_id,
            caller.device_id,
            version,
            recipient_user=caller.user_id,
            creator=channel.created_by,
            members_only=channel.private,
        )
        return found, await self.rotation.commitment_of(channel, version)

    async def channel_key(
        self, caller: Caller, channel_id: str, key_version: int | None = None
    ) -> StoredEnvelope:
        """The one envelope the default read answers: the preferred one."""
        channel = await self._channel(caller, channel_id)
        found = await self.keys.channel_envelopes(
            channel_id,
            caller.device_id,
            self._version(channel, key_version),
            recipient_user=caller.user_id,
            creator=channel.created_by,
            members_only=channel.private,
            limit=1,
        )
        if not found:
            raise NotFound("no key envelope for this device", code="envelope_not_found")
        return found[0]

    async def put_channel_keys(
        self, caller: Caller, channel_id: str, envelopes: Sequence[NewEnvelope]
    ) -> list[str]:
        """Store the caller's envelopes (each replaces only the caller's own earlier copy);
        the device ids whose default read answers another, preferred envelope instead."""
        await rate_limit(self.ctx, "envelope", caller.user_id)
        channel = await self._channel(caller, channel_id)
        current = channel.key_version
        await self._check(caller, envelopes, current, channel.private)
        if channel.private:
            # Only current members' devices get a private room's key (of any version).
            outsiders = await self.rotation.non_member_devices(
                channel_id, [item.device_id for item in envelopes]
            )
            if outsiders:
                raise Forbidden(
                    f"device is not a current member's: {outsiders[0]}",
                    code="not_a_member_device",
                )
        now = self.ctx.clock()
        rows = [
            {
                "channel_id": channel_id,
                **self._row(caller, item),
                "key_version": current if item.key_version is None else item.key_version,
                "created_at": now,
            }
            for item in envelopes
        ]
        try:
            behind = await self.keys.put_channel_envelopes(
                channel_id, rows, creator=channel.created_by
            )
        except ReferenceGone:
            # Deleted by a concurrent request: answer as if this one had come second.
            await self.uow.session.rollback()
            if not await self.channels.exists(channel_id):
                raise NotFound("channel not found", code="channel_not_found") from None
            raise await self._vanished_device(envelopes) from None
        return self._kept(caller, envelopes, set(behind), "channel", channel_id)

    async def held(self, caller: Caller, device_id: str) -> tuple[list[str], bool]:
        """Which keys a device has confirmed (or got from its own user's other device):
        a sharer skips those, so that one member's wrong envelope never makes the others
        skip the device."""
        if not await self.devices.existing_ids([device_id]):
            raise NotFound(f"unknown device: {device_id}", code="unknown_device")
        channels = await self.keys.held_channels(device_id, viewer=caller.user_id)
        return channels, await self.keys.holds_directory(device_id)

    async def directory_keys(self, caller: Caller) -> list[StoredEnvelope]:
        require_trusted(caller)
        return await self.keys.directory_envelopes(caller.device_id, recipient_user=caller.user_id)

    async def directory_key(self, caller: Caller) -> StoredEnvelope | None:
        require_trusted(caller)
        found = await self.keys.directory_envelopes(
            caller.device_id, recipient_user=caller.user_id, limit=1
        )
        return found[0] if found else None

    async def put_directory_keys(
        self, caller: Caller, envelopes: Sequence[NewEnvelope]
    ) -> list[str]:
        """Store the caller's envelopes in one statement, as for channel keys (without
        versions; the preference has no creator: admins, then the recipient's user)."""
        require_trusted(caller)
        await rate_limit(self.ctx, "envelope", caller.user_id)
        await self._check(caller, envelopes)
        now = self.ctx.clock()
        rows = [{**self._row(caller, item), "created_at": now} for item in envelopes]
        try:
            behind = await self.keys.put_directory_envelopes(rows)
        except ReferenceGone:
            await self.uow.session.rollback()
            raise await self._vanished_device(envelopes) from None
        return self._kept(caller, envelopes, set(behind), "directory", None)

    async def set_directory_commitment(self, caller: Caller, commitment: str) -> str:
        """Once, by an admin's device (the client that made the directory key); every node
        serves it in GET /server/info from then on."""
        checked_commitment(commitment)
        if not caller.is_admin:
            raise Forbidden("only an admin may set the directory key commitment", code="not_admin")
        if not await self.settings.add_once(DIRECTORY_COMMITMENT, commitment, self.ctx.clock()):
            raise Conflict("the directory key commitment is already set", code="commitment_set")
        live = self.ctx.live_settings
        self.uow.emit(DirectoryCommitmentSet(key_commitment=commitment))
        self.uow.emit(
            ServerInfoUpdated(
                server_title=live.server_title,
                welcome_message=live.welcome_message,
                registration_open=live.registration_open,
                directory_key_commitment=commitment,
            )
        )
        return commitment

    @staticmethod
    def _row(caller: Caller, item: NewEnvelope) -> dict[str, Any]:
        return {
            "device_id": item.device_id,
            "sender_device_id": item.sender_device_id,
            "sender_user_id": caller.user_id,
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
        behind: set[str],
        kind: str,
        channel_id: str | None,
    ) -> list[str]:
        """The ``kept`` list old clients know: in batch order, each device once."""
        kept = list(dict.fromkeys(item.device_id for item in envelopes if item.device_id in behind))
        if kept:
            # Ids only: never an envelope. Info, not warning: existing clients re-share
            # every key from every member every 30 s, so most of these are routine.
            log.info(
                "envelope stored behind a preferred one",
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
