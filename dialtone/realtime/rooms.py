"""This node's view of who is in which private room: the hub's delivery filter.

Every node holds private room id → member user ids. It is loaded from the database at
start (``MemberRepository.all_private``) and kept current by the events that change it
(``channel.created``, ``channel.member.added``/``removed``, ``channel.deleted``), which
reach every node through the broker in the order they were published. A channel that
is not in the map is public: one dict lookup decides, and a public channel's events
keep the one-encode broadcast.

A load runs while events keep arriving: the broker is subscribed first, the events
that change membership are applied to the live map and also noted, and once the
database's snapshot is in they are applied again on top of it, in order (each is
idempotent), so nothing committed before or during the load is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.db.repositories.members import MemberRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.schemas.events import (
    ChannelCreated,
    ChannelDeleted,
    ChannelMemberAdded,
    ChannelMemberRemoved,
    Event,
)

log = logging.getLogger("dialtone.realtime")

MembershipEvent = ChannelCreated | ChannelMemberAdded | ChannelMemberRemoved | ChannelDeleted
RETRY_SECONDS = 2.0


class PrivateRooms:
    __slots__ = ("_noted", "members", "ready")

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {}
        self._noted: list[MembershipEvent] | None = None
        # False from a node's start until its first load: its channel events then reach
        # nobody (a private room's could otherwise pass for a public channel's).
        self.ready = True

    def may_see(self, channel_id: str, user_id: str) -> bool:
        members = self.members.get(channel_id)
        return members is None or user_id in members

    def loading(self, *, first: bool = False) -> None:
        """A load starts: note membership events until ``loaded``. Call it before the
        database is read (for the first load: before subscribing to the broker)."""
        self._noted = []
        if first:
            self.ready = False

    def loaded(self, snapshot: Mapping[str, set[str]]) -> None:
        noted, self._noted = self._noted or [], None
        self.members = {channel_id: set(users) for channel_id, users in snapshot.items()}
        for event in noted:
            self._apply(event)
        self.ready = True

    def abandoned(self) -> None:
        """A load failed: the live map stays as it was (kept current by the events)."""
        self._noted = None

    def apply(self, event: Event) -> None:
        """Apply a membership event (others are ignored)."""
        if isinstance(
            event, ChannelCreated | ChannelMemberAdded | ChannelMemberRemoved | ChannelDeleted
        ):
            if self._noted is not None:
                self._noted.append(event)
            self._apply(event)

    def _apply(self, event: MembershipEvent) -> None:
        match event:
            case ChannelCreated(channel=channel, members=members):
                if channel.private:
                    self.members.setdefault(channel.id, set()).update(m.user_id for m in members)
            case ChannelMemberAdded(channel_id=channel_id, user_id=user_id):
                self.members.setdefault(channel_id, set()).add(user_id)
            case ChannelMemberRemoved(channel_id=channel_id, user_id=user_id):
                room = self.members.get(channel_id)
                if room is not None:
                    room.discard(user_id)
            case ChannelDeleted(channel_id=channel_id):
                self.members.pop(channel_id, None)


async def _no_events(_: list[Any]) -> None:
    return None


async def load_rooms(rooms: PrivateRooms, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Read every private room's members into ``rooms`` (see the module's docstring)."""
    if rooms._noted is None:
        rooms.loading()
    try:
        async with UnitOfWork(sessionmaker, _no_events) as uow:
            snapshot = await MemberRepository(uow.session).all_private()
    except BaseException:
        rooms.abandoned()
        raise
    rooms.loaded(snapshot)


async def load_until_done(
    rooms: PrivateRooms,
    sessionmaker: async_sessionmaker[AsyncSession],
    stop: asyncio.Event,
    retry: float = RETRY_SECONDS,
) -> None:
    """Load, retrying while the database cannot answer (the node starts without it)."""
    while not stop.is_set():
        try:
            await load_rooms(rooms, sessionmaker)
            return
        except Exception as exc:
            log.warning("could not load private rooms yet: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry)
