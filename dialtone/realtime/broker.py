"""Fan-out seam: services publish events after commit; the broker delivers them to hubs.

The in-memory broker serves a single node. A Redis-backed broker with the same
interface carries events between nodes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from dialtone.schemas.events import Event

Deliver = Callable[[Sequence[Event]], Awaitable[None]]


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
