"""Token buckets: the pure arithmetic, plus a memory store and a Redis store.

A bucket holds up to ``capacity`` tokens (the burst) and gains ``rate`` tokens per
second. A hit takes ``cost`` tokens if that many are there; otherwise it is refused
and told how long until enough have refilled. ``peek`` asks the same question
without taking anything (a login looks at the buckets that only failures spend).
``charge`` takes tokens without a check (a failed login pays after the fact) and never
goes below zero;
``refund`` gives tokens back (a right admin token costs nothing) up to the burst.

Per-connection limits (the WebSocket gateway) need no shared store: ``LocalBucket``
wraps ``Bucket`` and ``take`` for a single holder.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dialtone.metrics import NO_METRICS, Metrics

log = logging.getLogger("dialtone.security")


@dataclass(frozen=True)
class Bucket:
    capacity: float
    rate: float  # tokens per second

    @classmethod
    def per(cls, burst: int, seconds: float) -> Bucket:
        """``burst`` tokens, then one every ``seconds``."""
        return cls(capacity=float(burst), rate=1.0 / seconds)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds until the hit would be allowed; 0 when allowed
    remaining: float


def refill(bucket: Bucket, tokens: float, stamp: float, now: float) -> float:
    elapsed = max(0.0, now - stamp)
    return min(bucket.capacity, tokens + elapsed * bucket.rate)


def take(
    bucket: Bucket, state: tuple[float, float] | None, now: float, cost: float = 1.0
) -> tuple[Decision, tuple[float, float]]:
    """One hit on a bucket whose state is ``(tokens, stamp)`` (None: a new, full bucket)."""
    tokens = bucket.capacity if state is None else refill(bucket, state[0], state[1], now)
    if tokens >= cost:
        tokens -= cost
        return Decision(True, 0.0, tokens), (tokens, now)
    wait = (cost - tokens) / bucket.rate if bucket.rate > 0 else math.inf
    return Decision(False, wait, tokens), (tokens, now)


def charge(
    bucket: Bucket, state: tuple[float, float] | None, now: float, cost: float
) -> tuple[float, float]:
    """Take ``cost`` tokens unconditionally (a negative cost gives them back), staying
    within 0 and the bucket's capacity."""
    tokens = bucket.capacity if state is None else refill(bucket, state[0], state[1], now)
    return min(bucket.capacity, max(0.0, tokens - cost)), now


class LocalBucket:
    """One bucket owned by one holder (e.g. a WebSocket connection): no store, no lock."""

    def __init__(self, bucket: Bucket, clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket = bucket
        self._clock = clock
        self._state: tuple[float, float] | None = None

    def hit(self, cost: float = 1.0) -> Decision:
        decision, self._state = take(self.bucket, self._state, self._clock(), cost)
        return decision


class Store(Protocol):
    async def hit(self, key: str, bucket: Bucket, cost: float) -> Decision: ...

    async def peek(self, key: str, bucket: Bucket, cost: float) -> Decision:
        """What a hit would answer now, taking nothing; ``remaining`` is what the bucket
        holds now (not after the hit)."""
        ...

    async def charge(self, key: str, bucket: Bucket, cost: float) -> None:
        """Take ``cost`` tokens without a check; a negative cost gives tokens back."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """Buckets of this process. Oldest keys are dropped past ``max_keys`` (memory bound);
    a dropped bucket comes back full, which only ever errs towards allowing."""

    def __init__(
        self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def _put(self, key: str, state: tuple[float, float]) -> None:
        self._state[key] = state
        self._state.move_to_end(key)
        while len(self._state) > self._max_keys:
            self._state.popitem(last=False)

    async def hit(self, key: str, bucket: Bucket, cost: float = 1.0) -> Decision:
        decision, state = take(bucket, self._state.get(key), self._clock(), cost)
        self._put(key, state)
        return decision

    async def peek(self, key: str, bucket: Bucket, cost: float = 1.0) -> Decision:
        state, now = self._state.get(key), self._clock()
        held = bucket.capacity if state is None else refill(bucket, state[0], state[1], now)
        decision = take(bucket, state, now, cost)[0]
        return Decision(decision.allowed, decision.retry_after, held)

    async def charge(self, key: str, bucket: Bucket, cost: float) -> None:
        self._put(key, charge(bucket, self._state.get(key), self._clock(), cost))

    async def close(self) -> None:
        self._state.clear()


# KEYS[1] bucket key. ARGV: capacity, rate, cost, mode (1 = hit, 0 = charge, 2 = peek:
# answer as a hit would, store nothing).
# Redis's own clock (TIME) is used so every node agrees on "now".
_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = capacity
if saved[1] then
  local elapsed = math.max(0, now - tonumber(saved[2]))
  tokens = math.min(capacity, tonumber(saved[1]) + elapsed * rate)
end
local allowed = 0
local wait = 0
if mode == 0 then
  tokens = math.min(capacity, math.max(0, tokens - cost))
  allowed = 1
elseif tokens >= cost then
  if mode == 1 then
    tokens = tokens - cost
  end
  allowed = 1
else
  wait = (cost - tokens) / rate
end
if mode == 2 then
  return {allowed, tostring(wait), tostring(tokens)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity / rate) * 1000) + 1000)
return {allowed, tostring(wait), tostring(tokens)}
"""


class RedisStore:
    """Buckets shared by every node, updated atomically by one Lua script."""

    def __init__(self, client: Any, prefix: str = "dialtone:rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_LUA)

    async def _run(self, key: str, bucket: Bucket, cost: float, mode: int) -> Decision:
        allowed, wait, tokens = await self._script(
            keys=[self._prefix + key], args=[bucket.capacity, bucket.rate, cost, mode]
        )
        return Decision(bool(int(allowed)), float(wait), float(tokens))

    async def hit(self, key: str, bucket: Bucket, cost: float = 1.0) -> Decision:
        return await self._run(key, bucket, cost, 1)

    async def peek(self, key: str, bucket: Bucket, cost: float = 1.0) -> Decision:
        return await self._run(key, bucket, cost, 2)

    async def charge(self, key: str, bucket: Bucket, cost: float) -> None:
        await self._run(key, bucket, cost, 0)

    async def close(self) -> None:
        await self._client.aclose()


class Limiter:
    """Named policies over one store. Disabled, every hit is allowed and nothing is stored.

    A store that fails (Redis down) lets the request through and logs a warning:
    an outage of the limiter must not become an outage of the server.
    """

    def __init__(self, store: Store, policies: dict[str, Bucket], *, enabled: bool = True) -> None:
        self.store = store
        self.policies = policies
        self.enabled = enabled
        self.metrics: Metrics = NO_METRICS

    async def hit(self, policy: str, key: str, cost: float = 1.0) -> Decision:
        if not self.enabled:
            return Decision(True, 0.0, math.inf)
        bucket = self.policies[policy]
        try:
            decision = await self.store.hit(f"{policy}:{key}", bucket, cost)
        except Exception as exc:  # the store is external; never fail the request for it
            log.warning("rate-limit store failed, allowing", extra={"error": type(exc).__name__})
            return Decision(True, 0.0, 0.0)
        if not decision.allowed:
            self.metrics.rate_limited(policy)
            log.info(
                "rate limit hit",
                extra={
                    "event": "rate_limited",
                    "policy": policy,
                    "retry_after": decision.retry_after,
                },
            )
        return decision

    async def peek(self, policy: str, key: str, cost: float = 1.0) -> Decision:
        """Would a hit of ``cost`` be allowed now? Nothing is taken. ``remaining`` is
        what the bucket holds (``capacity`` when nothing has spent it lately)."""
        if not self.enabled:
            return Decision(True, 0.0, math.inf)
        bucket = self.policies[policy]
        try:
            return await self.store.peek(f"{policy}:{key}", bucket, cost)
        except Exception as exc:  # as hit: an outage of the store lets requests through
            log.warning("rate-limit store failed, allowing", extra={"error": type(exc).__name__})
            return Decision(True, 0.0, math.inf)

    def capacity(self, policy: str) -> float:
        return self.policies[policy].capacity

    async def charge(self, policy: str, key: str, cost: float) -> None:
        if not self.enabled:
            return
        try:
            await self.store.charge(f"{policy}:{key}", self.policies[policy], cost)
        except Exception as exc:
            log.warning("rate-limit store failed", extra={"error": type(exc).__name__})

    async def refund(self, policy: str, key: str, cost: float = 1.0) -> None:
        """Give back what a hit took (never above the burst)."""
        await self.charge(policy, key, -cost)

    async def close(self) -> None:
        await self.store.close()


def retry_after_seconds(decision: Decision) -> int:
    return max(1, math.ceil(decision.retry_after))
