"""Fan-out seam: services publish events after commit; the broker delivers them to hubs.

The in-memory broker serves a single node. The Redis broker carries the same events
between nodes over one pub/sub channel: a node delivers its own events at once (Redis
or not), and the other nodes' batches in the order Redis saw them; within a channel,
messages keep their storage order on every node (``ChannelOrder``). When Redis loses
events (an outage, a lost subscription, a failed publish), the sockets that may have
missed them are closed with 1013 ``catch_up`` so that their clients page the hole.

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
from dialtone.schemas.events import (
    ChannelMessageNew,
    DeliveryGap,
    Event,
    encode_events,
    event_decoder,
)

Deliver = Callable[[Sequence[Event]], Awaitable[None]]
# Told when sockets of this node may have missed events: close those opened before the
# given wall-clock time (None: every socket) so that their clients catch up.
OnGap = Callable[[float | None], object]

# How long a node's own message waits for earlier messages of its channel, stored by
# other nodes and still on their way through Redis, before it is delivered anyway.
ORDER_WAIT_SECONDS = 1.0
# A publish not done by then is given up (and retried once).
PUBLISH_TIMEOUT_SECONDS = 2.0
# How often a node retries telling the others that it could not publish.
GAP_NOTICE_RETRY_SECONDS = 1.0

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


class ChannelOrder:
    """Keeps a node's own messages behind the earlier messages of their channel.

    A node delivers its own events at once, without waiting for Redis, while the
    messages other nodes stored just before (under the channel's lock) may still be on
    their way through Redis. The highest ``seq`` delivered here is remembered per
    channel; a message whose predecessor has not been delivered yet waits for it, up to
    ``ORDER_WAIT_SECONDS`` (a predecessor lost in a Redis outage is never coming: the
    sockets that missed it are closed for catch-up, see ``RedisBroker``).
    """

    def __init__(self, timeout: float = ORDER_WAIT_SECONDS) -> None:
        self.timeout = timeout
        self._top: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}

    def seen(self, events: Sequence[Event]) -> None:
        for event in events:
            if not isinstance(event, ChannelMessageNew) or event.seq is None:
                continue
            channel_id = event.channel_id
            if event.seq > self._top.get(channel_id, 0):
                self._top[channel_id] = event.seq
            waiters = self._waiters.get(channel_id)
            if not waiters:
                continue
            still = []
            for want, future in waiters:
                if want > event.seq:
                    still.append((want, future))
                elif not future.done():
                    future.set_result(None)
            if still:
                self._waiters[channel_id] = still
            else:
                del self._waiters[channel_id]

    async def wait_before(self, events: Sequence[Event]) -> None:
        """Wait until the message preceding each of these in its channel has been
        delivered here (only in channels this node has delivered messages of)."""
        pending: list[asyncio.Future[None]] = []
        for event in events:
            if not isinstance(event, ChannelMessageNew) or event.seq is None:
                continue
            top = self._top.get(event.channel_id)
            if top is None or top >= event.seq - 1:
                continue
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(event.channel_id, []).append((event.seq - 1, future))
            pending.append(future)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.timeout)
            for future in late:
                future.cancel()
            if late:
                log.info("delivering a message before an earlier one of its channel arrived")


class RedisBroker:
    """Events as sealed JSON batches on one Redis pub/sub channel, ``<prefix>events``.

    A node's own events are delivered to its own sockets at once, then handed to Redis
    for the other nodes (whose batches the node delivers as they arrive; its own are
    skipped). Delivery never fails silently: when the subscription is lost, and again
    when it is re-established, ``on_gap`` closes this node's sockets (their clients
    catch up from history); when a publish fails, this node's sockets are closed once
    and, as soon as Redis takes batches again, a ``DeliveryGap`` notice makes the other
    nodes close theirs.
    """

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
        self.on_gap: OnGap | None = None
        self.order = ChannelOrder()
        # Subscription confirmations seen: every one after the first is a re-subscription.
        self._subscribed = 0
        self.subscription_up = False
        self.publishing = True  # the last publish went through
        self._failed_at: float | None = None  # last failed publish not yet announced
        self._notice: asyncio.Task[None] | None = None
        self.gaps = 0  # times this node's sockets were closed for catch-up

    async def start(self, deliver: Deliver) -> None:
        from redis import asyncio as redis_asyncio

        self._deliver = deliver
        self._redis = redis_asyncio.Redis.from_url(self._url)
        # Confirmations are kept: a second one means the connection was re-established.
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
        await self._pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._listen(), name="dialtone-redis-broker")

    def _gap(self, reason: str, opened_before: float | None = None) -> None:
        self.gaps += 1
        log.warning(
            "redis broker: %s; closing sockets so that clients catch up",
            reason,
            extra={"event": "delivery_gap"},
        )
        if self.on_gap is not None:
            try:
                self.on_gap(opened_before)
            except Exception:
                log.exception("closing sockets for catch-up failed")

    async def _listen(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                # The client reconnects (and re-subscribes) by itself when listening
                # resumes after an error: its new confirmation tells us.
                async for message in self._pubsub.listen():
                    kind = message.get("type")
                    if kind == "subscribe":
                        self._subscribed += 1
                        self.subscription_up = True
                        if self._subscribed > 1:
                            self._gap("subscription re-established")
                        continue
                    if kind == "message":
                        await self._received(bytes(message["data"]))
                await asyncio.sleep(1.0)  # unsubscribed (not by us): subscribe again
                await self._pubsub.subscribe(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.broker_reconnect()
                if self.subscription_up:
                    self.subscription_up = False
                    self._gap(f"subscription lost ({type(exc).__name__})")
                else:
                    log.debug("redis broker: still cannot subscribe: %s", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _received(self, data: bytes) -> None:
        sealed = unseal(self._key, self.channel, data)
        if sealed is None:
            self._drop()
            return
        if sealed.sender == self._sender:
            return  # delivered here when it was published
        if not self._replays.fresh(sealed.sender, sealed.seq):
            self._drop()
            return
        self.metrics.broker_received(time.time() - sealed.sent)
        try:
            events = event_decoder.decode(sealed.body)
        except msgspec.DecodeError:
            log.warning("dropping an undecodable broker message")
            return
        gaps = [e for e in events if isinstance(e, DeliveryGap)]
        if gaps:
            events = [e for e in events if not isinstance(e, DeliveryGap)]
            until = max(g.until_ms for g in gaps) / 1000
            # Sockets opened after the other node's last failed publish caught up when
            # they opened (a second of margin for clocks).
            self._gap("another node could not publish", opened_before=until + 1.0)
        self.order.seen(events)
        if self._deliver is not None and events:
            await self._deliver(events)

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
        """Called after the commit: deliver on this node, then hand to Redis. A Redis
        outage must not turn a stored change into an error for its author (its own
        sockets already have it); one retry, then the loss is logged and made loud (see
        the class docstring)."""
        if not events:
            return
        assert self._redis is not None, "broker not started"
        if self.subscription_up:
            await self.order.wait_before(events)
        self.order.seen(events)
        if self._deliver is not None:
            await self._deliver(events)
        if await self._send(events):
            return
        log.error(
            "redis broker: could not publish %s",
            ", ".join(type(e).__name__ for e in events),
            extra={"event": "broker_publish_failed"},
        )
        self._failed_at = time.time()
        if self.publishing:
            self.publishing = False
            # Redis is likely away for this node's subscription too.
            self._gap("publish failed")
        if self._notice is None or self._notice.done():
            self._notice = asyncio.create_task(self._announce_gap(), name="dialtone-gap-notice")

    async def _send(self, events: Sequence[Event]) -> bool:
        # Sealed once: a retry is the same batch, so receivers take it at most once.
        payload = seal(
            self._key, self.channel, encode_events(events), self._sender, next(self._seq)
        )
        for attempt in (1, 2):
            try:
                # A Redis that hangs (stopped, not down) must not hold the message
                # writer: a publish that takes this long counts as failed.
                async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                    await self._redis.publish(self.channel, payload)
            except Exception:
                if attempt == 1:
                    await asyncio.sleep(0.2)
            else:
                return True
        return False

    async def _announce_gap(self) -> None:
        """Until Redis takes it, retry telling the other nodes that they missed events."""
        while self._failed_at is not None:
            await asyncio.sleep(GAP_NOTICE_RETRY_SECONDS)
            failed_at = self._failed_at
            notice = DeliveryGap(node_id=self._sender.hex(), until_ms=int(failed_at * 1000))
            if await self._send([notice]):
                if self._failed_at == failed_at:
                    self._failed_at = None
                self.publishing = True
                log.warning("redis broker: publishing again; told the other nodes")

    async def stop(self) -> None:
        if self._notice is not None:
            self._notice.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._notice
            self._notice = None
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
