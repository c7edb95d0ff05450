"""The broker seam: the Redis broker carries every event type between nodes."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Sequence

import pytest
from redis import asyncio as redis_asyncio

from dialtone.realtime.broker import RedisBroker
from dialtone.schemas.events import (
    ChannelMessageNew,
    Event,
    NodeState,
    SessionsRevoked,
    VoiceRelay,
    WebrtcOfferOut,
)
from tests.conftest import REDIS_URL


@pytest.mark.redis
async def test_redis_broker_delivers_every_batch_to_every_node_in_order() -> None:
    if not REDIS_URL:
        pytest.skip("needs DIALTONE_TEST_REDIS_URL")
    prefix = f"dialtone-test-{secrets.token_hex(6)}:"
    got: dict[str, list[Event]] = {"a": [], "b": []}
    brokers = {name: RedisBroker(REDIS_URL, prefix) for name in got}

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
    broker = RedisBroker(f"redis://127.0.0.1:{dead}/0")
    broker._redis = redis_asyncio.Redis.from_url(f"redis://127.0.0.1:{dead}/0")
    try:
        with caplog.at_level(logging.ERROR, logger="dialtone.realtime"):
            await broker.publish([SessionsRevoked(user_id="u")])
        assert "could not publish SessionsRevoked" in caplog.text
    finally:
        await broker.stop()
