"""A row per node that the readiness check rewrites: proof that the node can store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import Base, UTCDateTime, utcnow


class HealthProbe(Base):
    """Holds nothing anyone reads: the readiness check's write lands here."""

    __tablename__ = "health_probes"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
