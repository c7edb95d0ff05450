"""Per-connection token buckets for WebSocket frames."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Chat: a burst of 10 messages, then 5 per second. Signalling (voice, WebRTC, and any
# frame that is not chat): a burst of 50, then 20 per second. A connection that keeps
# going over the limit (more than `FLOOD_BURST` refused frames, refilled at 1 per second)
# is closed with 1008.
CHAT_BURST, CHAT_RATE = 10, 5.0
SIGNAL_BURST, SIGNAL_RATE = 50, 20.0
FLOOD_BURST, FLOOD_RATE = 20, 1.0


class TokenBucket:
    def __init__(
        self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class FrameLimits:
    chat: TokenBucket
    signal: TokenBucket
    flood: TokenBucket

    @classmethod
    def default(cls) -> FrameLimits:
        return cls(
            chat=TokenBucket(CHAT_BURST, CHAT_RATE),
            signal=TokenBucket(SIGNAL_BURST, SIGNAL_RATE),
            flood=TokenBucket(FLOOD_BURST, FLOOD_RATE),
        )
