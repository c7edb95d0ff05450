from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from dialtone.db.models import HealthProbe
from dialtone.db.upsert import upsert


class HealthProbeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def touch(self, node: str, now: datetime) -> None:
        """Rewrite this node's row: a real write, in one statement (nodes and workers
        sharing a name may run it at once)."""
        statement = upsert(self.session, HealthProbe).values(node=node, checked_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[HealthProbe.node], set_={"checked_at": statement.excluded.checked_at}
        )
        await self.session.execute(statement)
