"""The broker seam: the Redis broker carries every event type between nodes."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Sequence

import pytest
from redis import asyncio as redis_asyncio

from dialtone.realtime.broker import RedisBroker, ReplayGuard, Sealed, broker_key, seal, unseal
from dialtone.schemas.events import (
    ChannelMessageNew,
    Event,
    NodeState,
    SessionsRevoked,
    VoiceRelay,
    WebrtcOfferOut,
)
from tests.conftest import CLUSTER_SECRET, REDIS_URL

SECRET = CLUSTER_SECRET.encode()


@pytest.mark.redis
async def test_redis_broker_delivers_every_batch_to_every_node_in_order() -> None:
    if not REDIS_URL:
        pytest.skip("needs DIALTONE_TEST_REDIS_URL")
    prefix = f"dialtone-test-{secrets.token_hex(6)}:"
    got: dict[str, list[Event]] = {"a": [], "b": []}
    brokers = {name: RedisBroker(REDIS_URL, prefix, secret=SECRET) for name in got}

    def collector(name: str):  # type: ignore[no-untyped-def]
        async def deliver(events: Sequence[Event]) -> None:
            got[name].extend(events)

        return deliver

    for name, broker in brokers.items():
        await broker.start(collector(name))
    try:
        batch: list[Event] = [
            ChannelMessageNew(
                message_id="m",
                channel_id="c",
                sender="u",
                sender_name_enc="n",
                body="b",
                sent_at="2026-11-22T14:20:17.123456Z",
            ),
            SessionsRevoked(user_id="u", token_hash=None),
            VoiceRelay(
                origin_conn_id="n1.x",
                payload=WebrtcOfferOut(channel_id="c", sender="u", recipient="v", sdp="v=0"),
            ),
            NodeState(node_id="n1", sockets=[("u", "n1.x")], voice=[("c", "u", "n1.x")]),
        ]
        await brokers["a"].publish(batch[:2])
        # Issue 20: a node delivers its own batches at once, without waiting for Redis,
        # so b publishes once a's batch reached it (as the channel lock orders writers).
        for _ in range(100):
            if len(got["b"]) == 2:
                break
            await asyncio.sleep(0.02)
        assert got["a"] == batch[:2]  # its own, delivered before publish returned
        await brokers["b"].publish(batch[2:])
        for _ in range(100):
            if all(len(events) == 4 for events in got.values()):
                break
            await asyncio.sleep(0.02)
        assert got["a"] == batch
        assert got["b"] == batch
    finally:
        for broker in brokers.values():
            await broker.stop()


async def test_redis_outage_after_commit_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    broker = RedisBroker(f"redis://127.0.0.1:{dead}/0", secret=SECRET)
    broker._redis = redis_asyncio.Redis.from_url(f"redis://127.0.0.1:{dead}/0")
    try:
        with caplog.at_level(logging.ERROR, logger="dialtone.realtime"):
            await broker.publish([SessionsRevoked(user_id="u")])
        assert "could not publish SessionsRevoked" in caplog.text
    finally:
        await broker.stop()


def test_seal_and_unseal() -> None:
    key = broker_key(SECRET)
    me = b"s" * 16
    sealed = seal(key, "p:events", b"[1]", me, 7, now=1000.0)
    assert unseal(key, "p:events", sealed, now=1000.0) == Sealed(me, 7, b"[1]")
    assert unseal(key, "p:events", sealed, now=1059.0) == Sealed(me, 7, b"[1]")
    assert unseal(key, "p:events", sealed, now=1061.0) is None  # stale
    assert unseal(key, "p:events", sealed, now=939.0) is None
    assert unseal(key, "q:events", sealed, now=1000.0) is None  # another prefix's channel
    assert unseal(broker_key(b"x" * 32), "p:events", sealed, now=1000.0) is None
    tampered = sealed[:-2] + b"2]"
    assert unseal(key, "p:events", tampered, now=1000.0) is None
    renumbered = sealed[:26] + bytes([sealed[26] ^ 1]) + sealed[27:]  # in the sequence
    assert unseal(key, "p:events", renumbered, now=1000.0) is None
    assert unseal(key, "p:events", b"[1]", now=1000.0) is None
    assert unseal(key, "p:events", b"", now=1000.0) is None
    with pytest.raises(ValueError, match="cluster secret"):
        RedisBroker("redis://127.0.0.1:1/0", secret=b"")


def test_replay_guard_takes_each_batch_once_in_any_nearby_order() -> None:
    clock = [0.0]
    guard = ReplayGuard(clock=lambda: clock[0])
    a, b = b"a" * 16, b"b" * 16
    assert guard.fresh(a, 5)
    assert not guard.fresh(a, 5)
    assert guard.fresh(a, 3)  # arrived late, not seen before
    assert guard.fresh(a, 6)
    assert not guard.fresh(a, 3)
    assert guard.fresh(b, 5)  # another sender's numbers are its own
    assert guard.fresh(a, 5 + ReplayGuard.WINDOW * 3)
    assert not guard.fresh(a, 4)  # far below the window: refused
    # A sender silent past the stamp window is forgotten (its batches would be stale).
    clock[0] += 1000
    assert guard.fresh(b"c" * 16, 1)
    assert guard.fresh(a, 1)


@pytest.mark.redis
async def test_forged_and_foreign_publishes_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Someone else on the same Redis publishes on our channel: unsigned JSON, a batch
    signed with another deployment's secret, an old batch, a fresh one replayed. None
    is delivered; the node's own batches after them are (pub/sub keeps order, so their
    arrival is the event to wait for)."""
    if not REDIS_URL:
        pytest.skip("needs DIALTONE_TEST_REDIS_URL")
    from dialtone.schemas.events import encode_events

    prefix = f"dialtone-test-{secrets.token_hex(6)}:"
    got: list[Event] = []
    arrived = asyncio.Event()

    async def deliver(events: Sequence[Event]) -> None:
        got.extend(events)
        arrived.set()

    broker = RedisBroker(REDIS_URL, prefix, secret=SECRET)
    await broker.start(deliver)

    async def nowhere(events: Sequence[Event]) -> None:
        pass

    # The genuine batches come from another node: a node's own batches are delivered
    # when published, not when they come back from Redis (issue 20).
    peer = RedisBroker(REDIS_URL, prefix, secret=SECRET)
    await peer.start(nowhere)
    raw = redis_asyncio.Redis.from_url(REDIS_URL)
    forged = encode_events([SessionsRevoked(user_id="victim")])
    try:
        caplog.set_level(logging.WARNING, logger="dialtone.realtime")
        await raw.publish(broker.channel, forged)
        other = broker_key(b"another-deployment-secret-0123456789")
        await raw.publish(broker.channel, seal(other, broker.channel, forged, b"f" * 16, 1))
        old = seal(broker_key(SECRET), broker.channel, forged, b"o" * 16, 1, now=1_000_000.0)
        await raw.publish(broker.channel, old)
        await peer.publish([SessionsRevoked(user_id="genuine")])
        await asyncio.wait_for(arrived.wait(), 30)
        assert got == [SessionsRevoked(user_id="genuine")]
        assert broker.dropped == 3

        # A genuine batch captured off the channel and published again is a replay.
        listener = raw.pubsub(ignore_subscribe_messages=True)
        await listener.subscribe(broker.channel)
        arrived.clear()
        await peer.publish([SessionsRevoked(user_id="once")])
        captured = None
        async with asyncio.timeout(30):
            while captured is None:
                message = await listener.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    captured = message["data"]
        await listener.aclose()
        await raw.publish(broker.channel, captured)
        await peer.publish([SessionsRevoked(user_id="after")])
        async with asyncio.timeout(30):
            while got[-1] != SessionsRevoked(user_id="after"):
                arrived.clear()
                await arrived.wait()
        assert got == [
            SessionsRevoked(user_id="genuine"),
            SessionsRevoked(user_id="once"),
            SessionsRevoked(user_id="after"),
        ]
        assert broker.dropped == 4
        rejected = [
            r for r in caplog.records if getattr(r, "event", None) == "broker_message_rejected"
        ]
        # One line for the burst, with the count, on each of the two nodes listening.
        assert len(rejected) == 2
    finally:
        await raw.aclose()
        await peer.stop()
        await broker.stop()
