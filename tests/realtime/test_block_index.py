"""The node's block filter (dialtone.realtime.blocks): loads, events during a load, release."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest

from dialtone.realtime.blocks import BlockIndex
from dialtone.schemas.events import BlockChanged


def changed(blocker: str, blocked: str, on: bool) -> BlockChanged:
    return BlockChanged(blocker_id=blocker, blocked_id=blocked, blocked=on)


async def test_events_during_a_load_win_over_what_the_load_read() -> None:
    index = BlockIndex()
    reading = asyncio.Event()
    answer: asyncio.Future[Collection[str]] = asyncio.get_running_loop().create_future()

    async def load(user_id: str) -> Collection[str]:
        reading.set()
        return await answer

    holding = asyncio.create_task(index.hold("alice", load))
    await reading.wait()
    # Committed after the read began: the read saw x blocked and y not.
    index.apply(changed("alice", "x", False))
    index.apply(changed("alice", "y", True))
    answer.set_result({"x", "z"})
    await holding
    assert not index.blocks("alice", "x")
    assert index.blocks("alice", "y")
    assert index.blocks("alice", "z")
    assert index.blocked_by == {"y": {"alice"}, "z": {"alice"}}
    # After the load, events simply apply.
    index.apply(changed("alice", "x", True))
    assert index.blocks("alice", "x")


async def test_a_second_socket_does_not_reload_and_the_last_one_drops_the_blocks() -> None:
    index = BlockIndex()
    loads: list[str] = []

    async def load(user_id: str) -> Collection[str]:
        loads.append(user_id)
        return {"bob"}

    await index.hold("alice", load)
    await index.hold("alice", load)
    assert loads == ["alice"]
    index.apply(changed("carol", "bob", True))  # carol has no socket here: ignored
    assert index.blocked_by == {"bob": {"alice"}}
    index.release("alice")
    assert index.blocks("alice", "bob")
    index.release("alice")
    assert not index.blocks("alice", "bob")
    assert index.blocked_by == {}
    index.release("alice")  # more releases than holds: nothing to do


async def test_a_failed_load_takes_no_hold() -> None:
    index = BlockIndex()

    async def broken(user_id: str) -> Collection[str]:
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        await index.hold("alice", broken)
    index.apply(changed("alice", "bob", True))
    assert not index.blocks("alice", "bob")
    assert index.blocked_by == {}
