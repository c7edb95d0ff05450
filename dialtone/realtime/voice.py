"""Voice rooms and the SDP/ICE relay. The server routes signalling; it never touches media.

Membership changes travel through the broker as ``VoiceMembership`` control events, and
every node applies them in broker order to its own copy of the rooms, then tells its
local sockets. A room holds users; a user may be in it with several sockets (devices),
and counts as present while at least one of them is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dialtone.schemas.events import (
    VoiceJoined,
    VoiceLeft,
    VoiceMembership,
    VoicePresence,
    VoiceRelay,
    VoiceRoster,
    encode_event,
)

if TYPE_CHECKING:
    from dialtone.realtime.hub import Connection, Hub


class VoiceRooms:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        # channel_id → user_id → ids of that user's sockets in the room (on any node)
        self.rooms: dict[str, dict[str, set[str]]] = {}

    def snapshot(self) -> dict[str, list[str]]:
        return {channel: sorted(users) for channel, users in self.rooms.items() if users}

    def users(self, channel_id: str) -> list[str]:
        return sorted(self.rooms.get(channel_id, {}))

    def _local_members(self, channel_id: str, *, skip_user: str | None = None) -> list[Connection]:
        conns = self._hub.conns
        may_see = self._hub.rooms.may_see
        found: list[Connection] = []
        for user_id, conn_ids in self.rooms.get(channel_id, {}).items():
            # A member removed from a private room may still hold a seat here until
            # its node's departure arrives: it hears nothing more of the room.
            if user_id == skip_user or not may_see(channel_id, user_id):
                continue
            for conn_id in conn_ids:
                conn = conns.get(conn_id)
                if conn is not None:
                    found.append(conn)
        return found

    def apply_membership(self, event: VoiceMembership) -> None:
        channel_id, user_id = event.channel_id, event.user_id
        if event.joined:
            if not self._hub.rooms.may_see(channel_id, user_id):
                # Removed from the private room before this seat was taken: no seat.
                joiner = self._hub.conns.get(event.conn_id)
                if joiner is not None and joiner.voice_room == channel_id:
                    joiner.voice_room = None
                return
            room = self.rooms.setdefault(channel_id, {})
            sockets = room.setdefault(user_id, set())
            first = not sockets
            sockets.add(event.conn_id)
            joiner = self._hub.conns.get(event.conn_id)
            if joiner is not None:
                joiner.push(encode_event(VoiceRoster(channel_id=channel_id, users=sorted(room))))
            if first:
                text = encode_event(VoiceJoined(channel_id=channel_id, sender=user_id))
                for conn in self._local_members(channel_id, skip_user=user_id):
                    conn.push(text)
                self._hub.to_channel(
                    channel_id,
                    encode_event(VoicePresence(channel_id=channel_id, sender=user_id, active=True)),
                )
            return

        present = self.rooms.get(channel_id)
        if present is None or event.conn_id not in present.get(user_id, ()):
            return
        room = present
        sockets = room[user_id]
        sockets.discard(event.conn_id)
        if sockets:
            return
        del room[user_id]
        if not room:
            del self.rooms[channel_id]
        self._announce_departure(channel_id, user_id, self._local_members(channel_id))

    def _announce_departure(self, channel_id: str, user_id: str, members: list[Connection]) -> None:
        text = encode_event(VoiceLeft(channel_id=channel_id, sender=user_id))
        for conn in members:
            if conn.user_id != user_id:
                conn.push(text)
        self._hub.to_channel(
            channel_id,
            encode_event(VoicePresence(channel_id=channel_id, sender=user_id, active=False)),
        )

    def end_room(self, channel_id: str) -> None:
        """The channel is gone: everyone in its room leaves, with the usual events."""
        members = self._local_members(channel_id)
        room = self.rooms.pop(channel_id, None)
        if room is None:
            return
        for conn in members:
            conn.voice_room = None
        for user_id in sorted(room):
            self._announce_departure(channel_id, user_id, members)

    def merge(self, channel_id: str, user_id: str, conn_id: str) -> None:
        """Learn a seat from another node's state, without announcing it."""
        self.rooms.setdefault(channel_id, {}).setdefault(user_id, set()).add(conn_id)

    def forget_prefix(self, prefix: str) -> None:
        """A node died: its sockets leave every room, with the usual events."""
        for channel_id in list(self.rooms):
            room = self.rooms[channel_id]
            for user_id in list(room):
                sockets = room[user_id]
                gone = {c for c in sockets if c.startswith(prefix)}
                if not gone:
                    continue
                sockets -= gone
                if sockets:
                    continue
                del room[user_id]
                if not room:
                    del self.rooms[channel_id]
                self._announce_departure(channel_id, user_id, self._local_members(channel_id))

    def apply_relay(self, event: VoiceRelay) -> None:
        payload = event.payload
        if self._hub.blocks.blocks(payload.recipient, payload.sender):
            return  # the recipient blocked the sender: nothing reaches them
        conn_ids = self.rooms.get(payload.channel_id, {}).get(payload.recipient, ())
        conns = self._hub.conns
        text: str | None = None
        for conn_id in conn_ids:
            conn = conns.get(conn_id)
            if conn is None or conn_id == event.origin_conn_id:
                continue
            if conn.voice_room != payload.channel_id:
                continue
            if text is None:
                text = encode_event(payload)
            conn.push(text)
