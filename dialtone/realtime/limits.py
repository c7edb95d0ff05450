"""Per-connection token buckets for WebSocket frames.

Chat frames and signalling frames (voice, WebRTC, and anything that is not chat) each
have a bucket whose size and refill come from Settings (``DIALTONE_WS_CHAT_*`` and
``DIALTONE_WS_SIGNAL_*``). A refused frame is answered with ``rate_limited``; a
connection that keeps going over the limit (more than ``FLOOD_BURST`` refused frames,
refilled at ``FLOOD_RATE`` per second) is closed with 1008.

Chat frames also draw on a bucket per user (``DIALTONE_WS_USER_CHAT_*``) shared by all
of that user's sockets on this node, so opening more sockets buys no more messages.
"""

from __future__ import annotations

import time
from collections import OrderedDict
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
