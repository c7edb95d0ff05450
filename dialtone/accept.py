"""Connections counted from the moment they are accepted, per address and in all.

The edge's per-address cap (dialtone.api.edge) counts requests, so it sees nothing of a
connection that never sends a request head: one address opening connections and
sending nothing could hold every file descriptor of the process. ``AcceptGate`` counts
each connection when the event loop hands it to its protocol (``connection_made``, which
for plain TCP is the accept itself) and closes one over the cap at once, before a byte
is read, so an address cannot hold more than ``cap`` descriptors of a worker.

The address is the TCP peer, the only one known before a request: a trusted proxy
(DIALTONE_TRUSTED_PROXIES) carries everyone's connections and is not capped here (the
edge's cap still applies to the forwarded address of each request).

The gate also watches how many descriptors the process has left: when the connections
it holds come near the soft RLIMIT_NOFILE it logs (at most once per ``LOG_EVERY``
seconds) and counts the event in ``descriptors_low``, for metrics to read.

``raise_descriptor_limit`` lifts the soft descriptor limit to the hard one at start
(systemd's default soft limit is 1024; see LimitNOFILE in docs/OPERATIONS.md).
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

from dialtone.security.addresses import Proxies, limit_key

log = logging.getLogger("dialtone.accept")

# Descriptors the process keeps for what is not a client connection (database and
# Redis connections, files, the listening sockets): "low" is within this many of the
# limit, or past LOW_FRACTION of it, whichever leaves more room.
RESERVED_DESCRIPTORS = 64
LOW_FRACTION = 0.9
LOG_EVERY = 10.0


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the descriptor limit from %d: %s", soft, exc)
        return soft, hard
    log.info("descriptor limit raised from %d to %d", soft, target)
    return target, hard


def descriptor_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class AcceptGate:
    """Per-process counts of open connections: by address key and in all."""

    def __init__(self, cap: int | None, trusted: Proxies) -> None:
        self.cap = cap  # None: no per-address cap (DIALTONE_RATE_LIMITS=off)
        self.trusted = trusted
        self.by_key: dict[str, int] = {}
        self.held: dict[Any, str | None] = {}  # transport → its key (None: not capped)
        self.open = 0
        # Counters for metrics (monotonic).
        self.refused = 0
        self.descriptors_low = 0
        self._low_mark = self._mark()
        self._logged_refusal = 0.0
        self._logged_low = 0.0

    @staticmethod
    def _mark() -> int:
        limit = descriptor_limit()
        return max(1, min(limit - RESERVED_DESCRIPTORS, int(limit * LOW_FRACTION)))

    def refresh_limit(self) -> None:
        """Re-read RLIMIT_NOFILE (after raise_descriptor_limit)."""
        self._low_mark = self._mark()

    def admit(self, transport: Any) -> bool:
        """Count a new connection; False when it must be closed unread (over the cap)."""
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        key: str | None = None
        if isinstance(address, str) and address not in self.trusted:
            key = limit_key(address)
            count = self.by_key.get(key, 0)
            if self.cap is not None and count >= self.cap:
                self.refused += 1
                now = time.monotonic()
                if now - self._logged_refusal >= LOG_EVERY:
                    self._logged_refusal = now
                    log.warning(
                        "open connection cap hit",
                        extra={
                            "event": "rate_limited",
                            "policy": "open_connections",
                            "client": address,
                            "refused_total": self.refused,
                        },
                    )
                return False
            self.by_key[key] = count + 1
        self.held[transport] = key
        self.open += 1
        if self.open >= self._low_mark:
            self._descriptors_low()
        return True

    def release(self, transport: Any) -> None:
        """The connection is gone (idempotent: both protocols of an upgrade may call it)."""
        if transport not in self.held:
            return
        key = self.held.pop(transport)
        self.open -= 1
        if key is not None:
            count = self.by_key[key] - 1
            if count:
                self.by_key[key] = count
            else:
                del self.by_key[key]

    def _descriptors_low(self) -> None:
        self.descriptors_low += 1
        now = time.monotonic()
        if now - self._logged_low >= LOG_EVERY:
            self._logged_low = now
            log.warning(
                "file descriptors running low: %d connections open, limit %d",
                self.open,
                descriptor_limit(),
                extra={"event": "descriptors_low", "open_connections": self.open},
            )
