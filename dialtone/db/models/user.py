from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, false
from sqlalchemy.orm import Mapped, mapped_column

from dialtone.db.base import ID, Base, UTCDateTime, new_id, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    # HMAC-SHA256(pepper, normalised username), hex. The name itself is never stored.
    username_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # NULL for a name reserved by an admin through POST /users: it cannot log in.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # May delete any message, kick, and ban or unban ordinary members.
    is_moderator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A locked account cannot log in; locking also ends its sessions.
    is_locked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
