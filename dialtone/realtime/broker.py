"""Fan-out seam: services publish events after commit; the broker delivers them to hubs.

The in-memory broker serves a single node. The Redis broker carries the same events
between nodes over one pub/sub channel: every node (the publisher included) receives
every batch in the order Redis saw it, so all nodes apply the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec

from dialtone.schemas.events import Event, encode_events, event_decoder

Deliver = Callable[[Sequence[Event]], Awaitable[None]]

log = logging.getLogger("dialtone.realtime")


class Broker(Protocol):
    async def start(self, deliver: Deliver) -> None: ...

    async def publish(self, events: Sequence[Event]) -> None: ...

    async def stop(self) -> None: ...


class InMemoryBroker:
    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, events: Sequence[Event]) -> None:
        if self._deliver is not None:
            await self._deliver(events)

    async def stop(self) -> None:
        self._deliver = None


class RedisBroker:
    """Events as JSON batches on one Redis pub/sub channel, ``<prefix>events``."""

    def __init__(self, url: str, prefix: str = "dialtone:") -> None:
        self._url = url
        self.channel = f"{prefix}events"
        self._redis: Any = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        from redis import asyncio as redis_asyncio

        self._deliver = deliver
        self._redis = redis_asyncio.Redis.from_url(self._url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._listen(), name="dialtone-redis-broker")

    async def _listen(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        events = event_decoder.decode(message["data"])
                    except msgspec.DecodeError:
                        log.warning("dropping an undecodable broker message")
                        continue
                    if self._deliver is not None:
                        await self._deliver(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("redis broker: subscription lost, retrying")
                await asyncio.sleep(1.0)
                try:
                    await self._pubsub.subscribe(self.channel)
                except Exception:
                    log.warning("redis broker: resubscribe failed")

    async def publish(self, events: Sequence[Event]) -> None:
        """Called after the commit: a Redis outage must not turn a stored change into an
        error for its author. One retry, then the loss is logged; clients that missed
        messages catch up with the history endpoint when they reconnect."""
        if not events:
            return
        assert self._redis is not None, "broker not started"
        payload = encode_events(events)
        for attempt in (1, 2):
            try:
                await self._redis.publish(self.channel, payload)
                return
            except Exception:
                if attempt == 2:
                    log.exception(
                        "redis broker: could not publish %s",
                        ", ".join(type(e).__name__ for e in events),
                    )
                else:
                    await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        self._deliver = None


def make_broker(redis_url: str | None, prefix: str = "dialtone:") -> Broker:
    if redis_url:
        return RedisBroker(redis_url, prefix)
    return InMemoryBroker()
