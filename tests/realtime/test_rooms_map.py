"""The private-room map a node delivers by (dialtone/realtime/rooms.py): loaded while
events arrive, it ends up as the database and the events say, whatever the order."""

from __future__ import annotations

from dialtone.realtime.hub import Hub
from dialtone.realtime.rooms import PrivateRooms
from dialtone.schemas.channels import ChannelOut
from dialtone.schemas.events import (
    ChannelCreated,
    ChannelDeleted,
    ChannelMemberAdded,
    ChannelMemberRemoved,
    MemberOut,
)


def created(channel_id: str, *user_ids: str) -> ChannelCreated:
    return ChannelCreated(
        channel=ChannelOut(
            id=channel_id, name_enc="eA==", created_by=user_ids[0], created_at="", private=True
        ),
        members=[MemberOut(user_id=u, role="owner") for u in user_ids],
    )


def test_events_keep_the_map() -> None:
    rooms = PrivateRooms()
    rooms.apply(created("r", "a"))
    rooms.apply(ChannelMemberAdded(channel_id="r", user_id="b", role="member"))
    assert rooms.members == {"r": {"a", "b"}}
    assert rooms.may_see("r", "b")
    assert not rooms.may_see("r", "c")
    assert rooms.may_see("public", "c")
    rooms.apply(ChannelMemberRemoved(channel_id="r", user_id="a"))
    assert not rooms.may_see("r", "a")
    rooms.apply(ChannelDeleted(channel_id="r"))
    assert rooms.members == {}


def test_events_during_a_load_are_applied_over_the_snapshot() -> None:
    rooms = PrivateRooms()
    rooms.loading(first=True)
    assert not rooms.ready
    # Arrived after the subscription, before (or while) the database was read.
    rooms.apply(ChannelMemberAdded(channel_id="r", user_id="late", role="member"))
    rooms.apply(ChannelMemberRemoved(channel_id="r", user_id="gone"))
    rooms.apply(created("new", "x"))
    rooms.apply(ChannelDeleted(channel_id="old"))
    # The snapshot may or may not hold those changes: the result is the same.
    rooms.loaded({"r": {"owner", "gone"}, "old": {"y"}})
    assert rooms.ready
    assert rooms.members == {"r": {"owner", "late"}, "new": {"x"}}
    # A later reload starts from the live map and ends on the new snapshot.
    rooms.loading()
    assert rooms.ready
    rooms.apply(ChannelMemberAdded(channel_id="new", user_id="z", role="member"))
    rooms.loaded({"r": {"owner"}, "new": {"x"}})
    assert rooms.members == {"r": {"owner"}, "new": {"x", "z"}}
    rooms.loading()
    rooms.abandoned()
    rooms.apply(ChannelDeleted(channel_id="new"))
    assert rooms.members == {"r": {"owner"}}


def test_before_its_first_load_a_node_delivers_no_channel_event() -> None:
    hub = Hub()
    hub.rooms.loading(first=True)
    seen: list[str] = []
    hub.broadcast = lambda text, skip_device=None, skip_users=None: seen.append(text)  # type: ignore[method-assign]
    hub.to_channel("any", "{}")
    assert seen == []
    hub.rooms.loaded({})
    hub.to_channel("any", "{}")
    assert seen == ["{}"]
