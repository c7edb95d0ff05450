"""What services need from the running server, built once in the app's lifespan."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from dialtone.config import Settings
from dialtone.db.base import utcnow
from dialtone.security.passwords import PasswordPolicy, Passwords
from dialtone.services.session_cache import SessionCache


class OnlineDirectory:
    """Answers "is this user connected?"; the realtime hub implements it."""

    def online(self, user_ids: Iterable[str]) -> set[str]:
        return set()


@dataclass
class Caller:
    """The authenticated party of a request or socket."""

    user_id: str
    device_id: str
    is_admin: bool
    is_trusted: bool
    token_hash: str


@dataclass
class ServerContext:
    settings: Settings
    passwords: Passwords
    directory: OnlineDirectory = field(default_factory=OnlineDirectory)
    clock: Callable[[], datetime] = utcnow
    # Resolved bearer tokens; set by create_app on a single node (see session_cache.py).
    session_cache: SessionCache | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerContext:
        policy = PasswordPolicy(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )
        return cls(settings=settings, passwords=Passwords(policy))
