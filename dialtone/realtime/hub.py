"""Who is connected on this node, and delivery of events to their sockets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dialtone.schemas.events import Event
from dialtone.services.context import OnlineDirectory


class Hub(OnlineDirectory):
    def __init__(self) -> None:
        self._sockets_by_user: dict[str, int] = {}

    def online(self, user_ids: Iterable[str]) -> set[str]:
        return {user_id for user_id in user_ids if self._sockets_by_user.get(user_id)}

    async def deliver(self, events: Sequence[Event]) -> None:
        # Sockets arrive with the WebSocket gateway; until then nobody is connected.
        return None
