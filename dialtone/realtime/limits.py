"""Per-connection token buckets for WebSocket frames.

Chat frames and signalling frames (voice, WebRTC, and anything that is not chat) each
have a bucket whose size and refill come from Settings (``DIALTONE_WS_CHAT_*`` and
``DIALTONE_WS_SIGNAL_*``). A refused frame is answered with ``rate_limited``; a
connection that keeps going over the limit (more than ``FLOOD_BURST`` refused frames,
refilled at ``FLOOD_RATE`` per second) is closed with 1008.

Chat frames also draw on a bucket per user (``DIALTONE_WS_USER_CHAT_*``) shared by all
of that user's sockets, so opening more sockets buys no more messages: in this process
(``UserChatBuckets``) on a single server, in Redis (the ``ws_user_chat`` policy of the
rate limiter) when ``DIALTONE_REDIS_URL`` is set, so that it holds over every worker
and node.

Open sockets are capped per user (``DIALTONE_MAX_SOCKETS_PER_USER``) and per client
address (``DIALTONE_MAX_CONNECTIONS_PER_ADDRESS``, which the edge also applies to the
requests in flight of its own process) by ``SocketSlots``: in memory on a single
server, in Redis when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dialtone.config import Settings
from dialtone.security.ratelimit import Bucket, LocalBucket

log = logging.getLogger("dialtone.realtime")

FLOOD_BURST, FLOOD_RATE = 20, 1.0


@dataclass
class FrameLimits:
    chat: LocalBucket
    signal: LocalBucket
    flood: LocalBucket
    # Set while frames are being refused, so a refusal episode is logged once.
    limited: bool = False
    # The user's chat bucket, shared with the user's other sockets (see UserChatBuckets).
    user_chat: LocalBucket | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        user_chat: LocalBucket | None = None,
    ) -> FrameLimits:
        return cls(
            chat=LocalBucket(Bucket(settings.ws_chat_burst, settings.ws_chat_rate), clock),
            signal=LocalBucket(Bucket(settings.ws_signal_burst, settings.ws_signal_rate), clock),
            flood=LocalBucket(Bucket(FLOOD_BURST, FLOOD_RATE), clock),
            user_chat=user_chat,
        )

    def allow_chat(self) -> bool:
        """The socket's chat bucket, then the user's: both must have a token."""
        if not self.chat.hit().allowed:
            return False
        return self.user_chat is None or self.user_chat.hit().allowed


class UserChatBuckets:
    """One chat bucket per user on this node. The least recently used are dropped past
    ``max_users`` (a dropped bucket comes back full, which only errs towards allowing)."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 100_000,
    ) -> None:
        self._bucket = Bucket(settings.ws_user_chat_burst, settings.ws_user_chat_rate)
        self._clock = clock
        self._max_users = max_users
        self._buckets: OrderedDict[str, LocalBucket] = OrderedDict()

    def of(self, user_id: str) -> LocalBucket:
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = LocalBucket(self._bucket, self._clock)
            while len(self._buckets) > self._max_users:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user_id)
        return bucket


# ---------------------------------------------------------------- open sockets

USER_CAP, ADDRESS_CAP = "user", "address"


class SocketSlots(Protocol):
    """Open WebSockets per user and per client address, counted where every process
    that serves the same users sees them. A handshake takes a slot (or is refused
    with the cap it would break); the socket gives it back when it ends."""

    async def acquire(
        self, slot: str, user_id: str, address: str, user_cap: int, address_cap: int
    ) -> str | None:
        """None when the slot was taken, else ``USER_CAP`` or ``ADDRESS_CAP``."""
        ...

    async def release(self, slot: str, user_id: str, address: str) -> None: ...

    async def run(self, stop: asyncio.Event) -> None:
        """Keep this process's slots alive until ``stop`` (a store that expires them)."""
        ...

    async def close(self) -> None: ...


class MemorySlots:
    """One process's sockets: exact when this process is the only one serving (no
    Redis means one node of one worker: dialtone.workers refuses more without it)."""

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.addresses: dict[str, int] = {}

    async def acquire(
        self, slot: str, user_id: str, address: str, user_cap: int, address_cap: int
    ) -> str | None:
        if self.users.get(user_id, 0) >= user_cap:
            return USER_CAP
        if self.addresses.get(address, 0) >= address_cap:
            return ADDRESS_CAP
        self.users[user_id] = self.users.get(user_id, 0) + 1
        self.addresses[address] = self.addresses.get(address, 0) + 1
        return None

    async def release(self, slot: str, user_id: str, address: str) -> None:
        for counts, key in ((self.users, user_id), (self.addresses, address)):
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def close(self) -> None:
        self.users.clear()
        self.addresses.clear()


# KEYS: the user's set, the address's set (sorted sets of slot ids, scored by the time
# each slot expires unless its process renews it). ARGV: slot, user cap, address cap,
# lifetime in seconds. Returns 0 (taken), 1 (user cap) or 2 (address cap). Redis's own
# clock (TIME), so every process agrees on "now".
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl * 1000) + 1000)
end
return 0
"""

# KEYS: sets; ARGV[1]: lifetime; ARGV[i + 1]: the slot in KEYS[i]. XX: a slot released
# meanwhile is not brought back.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000)
end
return 0
"""

SLOT_LIFETIME = 60.0  # a process that dies without releasing holds its slots this long
RENEW_EVERY = SLOT_LIFETIME / 3
_RENEW_BATCH = 500  # slots per script call


class RedisSlots:
    """Slots every node and worker shares through Redis, taken and checked in one
    script. Each process renews its own slots; those of a process that died expire.
    Redis failing lets the socket in (logged): an outage of the counter must not
    become an outage of the server."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix + "sockets:"
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._held: dict[str, tuple[str, str]] = {}  # slot → (user key, address key)

    def _keys(self, user_id: str, address: str) -> tuple[str, str]:
        return f"{self._prefix}user:{user_id}", f"{self._prefix}addr:{address}"

    async def acquire(
        self, slot: str, user_id: str, address: str, user_cap: int, address_cap: int
    ) -> str | None:
        keys = self._keys(user_id, address)
        try:
            answer = int(
                await self._acquire(
                    keys=list(keys), args=[slot, user_cap, address_cap, SLOT_LIFETIME]
                )
            )
        except Exception as exc:  # the store is external; never refuse a socket for it
            log.warning("socket count store failed, allowing", extra={"error": type(exc).__name__})
            return None
        if answer == 1:
            return USER_CAP
        if answer == 2:
            return ADDRESS_CAP
        self._held[slot] = keys
        return None

    async def release(self, slot: str, user_id: str, address: str) -> None:
        keys = self._held.pop(slot, None)
        if keys is None:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, slot)
                await pipe.execute()
        except Exception as exc:  # it expires by itself
            log.warning("socket count store failed", extra={"error": type(exc).__name__})

    async def renew(self) -> None:
        pairs = [(key, slot) for slot, keys in list(self._held.items()) for key in keys]
        for start in range(0, len(pairs), _RENEW_BATCH):
            chunk = pairs[start : start + _RENEW_BATCH]
            await self._renew(
                keys=[key for key, _ in chunk], args=[SLOT_LIFETIME, *(s for _, s in chunk)]
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RENEW_EVERY)
            if stop.is_set():
                return
            try:
                await self.renew()
            except Exception as exc:
                log.warning("socket count store failed", extra={"error": type(exc).__name__})

    async def close(self) -> None:
        await self._client.aclose()


def make_slots(settings: Settings) -> SocketSlots:
    if settings.redis_url:
        import redis.asyncio as redis

        return RedisSlots(redis.from_url(settings.redis_url), settings.redis_prefix)
    return MemorySlots()
