"""Who blocked whom, for the users with sockets on this node: the delivery filter.

A node holds the blocks of its online users only. A user's first socket here loads them
(``hold``); ``BlockChanged`` events from the broker keep them current on every node;
the last socket gone drops them (``release``). The fan-out asks one dict lookup per
message (``blocked_by.get(sender)``), one per voice relay (``blocks``).

A block changed while a load is reading the database is not lost: the entry exists
from the moment ``hold`` is called, events apply to it at once and note the pair, and
the load's rows for a noted pair give way to the event (published after its commit, so
it is newer than anything a read that started before it could have seen).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from dialtone.schemas.events import BlockChanged


@dataclass
class _Entry:
    sockets: int = 0
    blocked: set[str] = field(default_factory=set)
    loads: int = 0  # loads reading the database now
    touched: set[str] = field(default_factory=set)  # pairs events changed during loads


class BlockIndex:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        # sender → the users on this node who blocked them (read on every message).
        self.blocked_by: dict[str, set[str]] = {}

    def blocks(self, user_id: str, sender: str) -> bool:
        """Whether ``user_id`` (online here) blocked ``sender``."""
        entry = self._entries.get(user_id)
        return entry is not None and sender in entry.blocked

    async def hold(self, user_id: str, load: Callable[[str], Awaitable[Collection[str]]]) -> None:
        """Count one socket of ``user_id``; its blocks are known when this returns.
        Raises what ``load`` raised (the socket is then not counted)."""
        entry = self._entries.get(user_id)
        if entry is None:
            entry = self._entries[user_id] = _Entry()
        entry.sockets += 1
        if entry.sockets > 1 and entry.loads == 0:
            return  # loaded already, and kept current by events since
        entry.loads += 1
        try:
            found = await load(user_id)
        except BaseException:
            entry.loads -= 1
            if entry.loads == 0:
                entry.touched.clear()
            self.release(user_id)
            raise
        entry.loads -= 1
        for blocked_id in found:
            if blocked_id not in entry.touched:
                self._add(user_id, entry, blocked_id)
        if entry.loads == 0:
            entry.touched.clear()

    def release(self, user_id: str) -> None:
        """One socket of ``user_id`` is gone; the last one takes its blocks away."""
        entry = self._entries.get(user_id)
        if entry is None:
            return
        entry.sockets -= 1
        if entry.sockets > 0 or entry.loads > 0:
            return
        del self._entries[user_id]
        for blocked_id in entry.blocked:
            self._unindex(user_id, blocked_id)

    def apply(self, event: BlockChanged) -> None:
        entry = self._entries.get(event.blocker_id)
        if entry is None:
            return  # nobody of theirs is here
        if entry.loads:
            entry.touched.add(event.blocked_id)
        if event.blocked:
            self._add(event.blocker_id, entry, event.blocked_id)
        elif event.blocked_id in entry.blocked:
            entry.blocked.discard(event.blocked_id)
            self._unindex(event.blocker_id, event.blocked_id)

    def _add(self, user_id: str, entry: _Entry, blocked_id: str) -> None:
        entry.blocked.add(blocked_id)
        self.blocked_by.setdefault(blocked_id, set()).add(user_id)

    def _unindex(self, user_id: str, blocked_id: str) -> None:
        blockers = self.blocked_by.get(blocked_id)
        if blockers is not None:
            blockers.discard(user_id)
            if not blockers:
                del self.blocked_by[blocked_id]
