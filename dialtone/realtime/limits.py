"""Per-connection token buckets for WebSocket frames.

Chat frames and signalling frames (voice, WebRTC, and anything that is not chat) each
have a bucket whose size and refill come from Settings (``DIALTONE_WS_CHAT_*`` and
``DIALTONE_WS_SIGNAL_*``). A refused frame is answered with ``rate_limited``; a
connection that keeps going over the limit (more than ``FLOOD_BURST`` refused frames,
refilled at ``FLOOD_RATE`` per second) is closed with 1008.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dialtone.config import Settings
from dialtone.security.ratelimit import Bucket, LocalBucket

FLOOD_BURST, FLOOD_RATE = 20, 1.0


@dataclass
class FrameLimits:
    chat: LocalBucket
    signal: LocalBucket
    flood: LocalBucket
    # Set while frames are being refused, so a refusal episode is logged once.
    limited: bool = False

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> FrameLimits:
        return cls(
            chat=LocalBucket(Bucket(settings.ws_chat_burst, settings.ws_chat_rate), clock),
            signal=LocalBucket(Bucket(settings.ws_signal_burst, settings.ws_signal_rate), clock),
            flood=LocalBucket(Bucket(FLOOD_BURST, FLOOD_RATE), clock),
        )
