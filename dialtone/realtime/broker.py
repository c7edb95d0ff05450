"""Fan-out seam: services publish events after commit; the broker delivers them to hubs.

The in-memory broker serves a single node. The Redis broker carries the same events
between nodes over one pub/sub channel: every node (the publisher included) receives
every batch in the order Redis saw it, so all nodes apply the same stream.

Every batch on Redis is sealed with HMAC-SHA256 under the cluster secret
(DIALTONE_CLUSTER_SECRET), so whoever else can publish on that Redis (another
deployment, a neighbour on a shared instance) cannot inject messages, revocations or
voice relays: a batch without a valid MAC, stamped too far from now, or seen before
(a replay) is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import math
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from dialtone.config import Settings
from dialtone.metrics import NO_METRICS, Metrics
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


# A sealed batch: version, send time (ms since the epoch), sender (random per broker),
# sequence number (per sender), MAC, JSON body. Integers are big-endian.
SEAL_VERSION = b"d2"
_STAMP = struct.Struct(">Q")
_SEQ = struct.Struct(">Q")
SENDER_SIZE = 16
_MAC_SIZE = hashlib.sha256().digest_size
_MAC_AT = len(SEAL_VERSION) + _STAMP.size + SENDER_SIZE + _SEQ.size
_HEADER = _MAC_AT + _MAC_SIZE
# A batch stamped further than this from the receiver's clock is stale (pub/sub
# delivers live); node clocks must agree within it (NTP). Within it, ReplayGuard
# refuses a (sender, sequence) seen before.
MAX_SKEW_SECONDS = 60.0


@dataclass(frozen=True)
class Sealed:
    sender: bytes
    seq: int
    body: bytes
    # The sender's clock, seconds since the epoch (for the lag metric; not identity).
    sent: float = field(default=0.0, compare=False)


def _mac(key: bytes, channel: str, head: bytes, body: bytes) -> bytes:
    # The channel is covered too: a batch cannot be moved to another prefix's channel.
    message = SEAL_VERSION + channel.encode() + b"\0" + head + body
    return hmac.new(key, message, hashlib.sha256).digest()


def seal(
    key: bytes, channel: str, body: bytes, sender: bytes, seq: int, now: float | None = None
) -> bytes:
    stamp = _STAMP.pack(int((time.time() if now is None else now) * 1000))
    head = stamp + sender + _SEQ.pack(seq)
    return SEAL_VERSION + head + _mac(key, channel, head, body) + body


def unseal(key: bytes, channel: str, data: bytes, now: float | None = None) -> Sealed | None:
    """An authentic batch stamped within the allowed skew; None for anything else."""
    if len(data) < _HEADER or not data.startswith(SEAL_VERSION):
        return None
    head = data[len(SEAL_VERSION) : _MAC_AT]
    mac = data[_MAC_AT:_HEADER]
    body = data[_HEADER:]
    if not hmac.compare_digest(mac, _mac(key, channel, head, body)):
        return None
    sent = _STAMP.unpack_from(head)[0] / 1000
    if abs((time.time() if now is None else now) - sent) > MAX_SKEW_SECONDS:
        return None
    sender = head[_STAMP.size : _STAMP.size + SENDER_SIZE]
    (seq,) = _SEQ.unpack_from(head, _STAMP.size + SENDER_SIZE)
    return Sealed(sender, seq, body, sent)


class ReplayGuard:
    """Accepts each (sender, sequence) once. Batches of one sender can arrive slightly
    out of order (concurrent publishes use several connections), so it keeps the
    numbers seen within a window below the highest, like IPsec's anti-replay window;
    anything older than the window is refused. Senders silent for longer than the
    stamp check allows are forgotten (their batches would be refused as stale)."""

    WINDOW = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._senders: dict[bytes, tuple[int, set[int], float]] = {}
        self._pruned_at = clock()

    def fresh(self, sender: bytes, seq: int) -> bool:
        now = self._clock()
        state = self._senders.get(sender)
        if state is None:
            self._senders[sender] = (seq, {seq}, now)
        else:
            top, seen, _ = state
            if seq in seen or seq <= top - self.WINDOW:
                return False
            seen.add(seq)
            top = max(top, seq)
            if len(seen) > 2 * self.WINDOW:
                seen = {n for n in seen if n > top - self.WINDOW}
            self._senders[sender] = (top, seen, now)
        if now - self._pruned_at > MAX_SKEW_SECONDS:
            self._pruned_at = now
            horizon = now - 2 * MAX_SKEW_SECONDS
            for gone in [k for k, (_, _, last) in self._senders.items() if last < horizon]:
                del self._senders[gone]
        return True


def broker_key(cluster_secret: bytes) -> bytes:
    """The MAC key, derived so the secret itself is never used for anything else."""
    return hmac.new(cluster_secret, b"dialtone broker mac v1", hashlib.sha256).digest()


class RedisBroker:
    """Events as sealed JSON batches on one Redis pub/sub channel, ``<prefix>events``."""

    def __init__(self, url: str, prefix: str = "dialtone:", *, secret: bytes) -> None:
        if not secret:
            raise ValueError("the Redis broker needs the cluster secret")
        self._url = url
        self._key = broker_key(secret)
        self.channel = f"{prefix}events"
        self.dropped = 0
        self._dropped_logged_at = -math.inf
        self._sender = secrets.token_bytes(SENDER_SIZE)
        self._seq = itertools.count(1)
        self._replays = ReplayGuard()
        self._redis: Any = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        self.metrics: Metrics = NO_METRICS

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
                    sealed = unseal(self._key, self.channel, bytes(message["data"]))
                    if sealed is None or not self._replays.fresh(sealed.sender, sealed.seq):
                        self._drop()
                        continue
                    self.metrics.broker_received(time.time() - sealed.sent)
                    try:
                        events = event_decoder.decode(sealed.body)
                    except msgspec.DecodeError:
                        log.warning("dropping an undecodable broker message")
                        continue
                    if self._deliver is not None:
                        await self._deliver(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("redis broker: subscription lost, retrying")
                self.metrics.broker_reconnect()
                await asyncio.sleep(1.0)
                try:
                    await self._pubsub.subscribe(self.channel)
                except Exception:
                    log.warning("redis broker: resubscribe failed")

    def _drop(self) -> None:
        """Count a forged, stale or foreign batch; log at most one line per 10 s (a
        flood of forgeries must not become a flood of log lines)."""
        self.dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= 10.0:
            self._dropped_logged_at = now
            log.warning(
                "dropped an unauthenticated broker message",
                extra={
                    "event": "broker_message_rejected",
                    "channel": self.channel,
                    "dropped_total": self.dropped,
                },
            )

    async def publish(self, events: Sequence[Event]) -> None:
        """Called after the commit: a Redis outage must not turn a stored change into an
        error for its author. One retry, then the loss is logged; clients that missed
        messages catch up with the history endpoint when they reconnect."""
        if not events:
            return
        assert self._redis is not None, "broker not started"
        # Sealed once: a retry is the same batch, so receivers take it at most once.
        payload = seal(
            self._key, self.channel, encode_events(events), self._sender, next(self._seq)
        )
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


def make_broker(redis_url: str | None, prefix: str = "dialtone:", secret: bytes = b"") -> Broker:
    if redis_url:
        return RedisBroker(redis_url, prefix, secret=secret)
    return InMemoryBroker()


def broker_for(settings: Settings) -> Broker:
    """The broker of a node, and of anything else that publishes to the nodes (the
    ``dialtone admin`` command): same Redis, same prefix, batches sealed with the same
    cluster secret, or the nodes drop them."""
    return make_broker(settings.redis_url, settings.redis_prefix, settings.cluster_secret)
