"""What services need from the running server, built once in the app's lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dialtone.config import Settings
from dialtone.db.base import utcnow
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.security.addresses import Proxies, parse_networks
from dialtone.security.keys import is_commitment
from dialtone.security.passwords import PasswordPolicy, Passwords
from dialtone.security.ratelimit import Bucket, Limiter, MemoryStore, RedisStore, Store
from dialtone.services.bans import BanList
from dialtone.services.hashing import HashingPool
from dialtone.services.live_settings import LiveSettings
from dialtone.services.server_log import ServerLog
from dialtone.services.session_cache import SessionCache
from dialtone.storage import FileStorage, LocalStorage

LAST_SEEN_EVERY = 60.0  # seconds between two last_seen_at writes for one device
# The row of ``server_settings`` holding the directory key commitment. Not a live setting:
# the settings API refuses the name (unknown setting), and it is written once.
DIRECTORY_COMMITMENT = "directory_key_commitment"


class OnlineDirectory:
    """Answers "is this user connected?"; the realtime hub implements it."""

    def online(self, user_ids: Iterable[str]) -> set[str]:
        return set()

    def online_users(self) -> set[str]:
        return set()

    def socket_count(self) -> int:
        return 0

    def nodes(self) -> list[str]:
        return []

    def voice_rooms(self) -> dict[str, list[str]]:
        return {}

    def addresses(self, user_ids: Iterable[str]) -> set[str]:
        """The client addresses of these users' open sockets on this node."""
        return set()


@dataclass
class Caller:
    """The authenticated party of a request or socket."""

    user_id: str
    device_id: str
    is_admin: bool
    is_trusted: bool
    token_hash: str
    # When the bearer token's session ends (None where a caller is built without one).
    expires_at: datetime | None = None
    is_moderator: bool = False

    @property
    def is_staff(self) -> bool:
        """An admin or a moderator: may delete any message, kick and ban members."""
        return self.is_admin or self.is_moderator


@dataclass
class ServerContext:
    settings: Settings
    passwords: Passwords
    directory: OnlineDirectory = field(default_factory=OnlineDirectory)
    clock: Callable[[], datetime] = utcnow
    limiter: Limiter = field(default_factory=lambda: Limiter(MemoryStore(), {}, enabled=False))
    trusted_proxies: Proxies = field(default_factory=Proxies)
    # device id → when its last_seen_at was last written (monotonic seconds)
    seen: dict[str, float] = field(default_factory=dict)
    # Resolved bearer tokens; given by create_app on a single node (see session_cache.py).
    session_cache: SessionCache | None = None
    # argon2 runs here, never on the event loop nor in the default executor.
    hashing: HashingPool = field(default_factory=HashingPool)
    # Administration: every node's copy of the bans and of the live settings.
    bans: BanList = field(default_factory=BanList)
    live: LiveSettings | None = None
    server_log: ServerLog = field(default_factory=ServerLog)
    started: float = field(default_factory=time.monotonic)
    # Called with the new Settings after a live settings change (e.g. the edge's cap).
    settings_hooks: list[Callable[[Settings], None]] = field(default_factory=list)
    # The directory key's commitment (issue 15): set once by an admin's client, stored
    # with the settings under DIRECTORY_COMMITMENT, held by every node like them.
    directory_commitment: str | None = None
    # Where uploaded files' bytes live (issue 17); the files folder unless given.
    storage: FileStorage | None = None

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = LiveSettings(self.settings)
        if self.storage is None:
            self.storage = LocalStorage(self.settings.files_folder)
        self.server_log.clock = lambda: self.clock()

    @property
    def files(self) -> FileStorage:
        assert self.storage is not None
        return self.storage

    @property
    def live_settings(self) -> LiveSettings:
        assert self.live is not None
        return self.live

    def apply_settings(self, stored: Mapping[str, Any]) -> None:
        """Make stored live settings the effective ones on this node."""
        self.settings = self.live_settings.apply(stored)
        self.limiter.policies.update(http_policies(self.settings))
        for hook in self.settings_hooks:
            hook(self.settings)

    def note_directory_commitment(self, value: Any) -> None:
        """Hold a stored directory commitment. Once set it stays: a refresh that read the
        table just before it was written does not take it away again."""
        if isinstance(value, str) and is_commitment(value):
            self.directory_commitment = value

    def sessions_changing(self, uow: UnitOfWork) -> None:
        """Call before a write in ``uow`` that ends sessions or changes a user's flags
        (is_admin, is_trusted, anything a Caller holds): cached tokens are dropped and
        none is cached again until that transaction has ended."""
        if self.session_cache is not None:
            self.session_cache.changing(uow)

    def database_failed(self) -> None:
        """A transaction ended with the database failing: cached sessions are dropped, so
        that nothing is vouched for by a cache while the database cannot confirm it (a new
        socket is refused with 503 during an outage, as a new request is)."""
        if self.session_cache is not None:
            self.session_cache.invalidate()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        directory: OnlineDirectory | None = None,
        session_cache: SessionCache | None = None,
    ) -> ServerContext:
        """The whole context; nothing is assigned to it after (create_app passes the hub)."""
        policy = PasswordPolicy(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )
        return cls(
            settings=settings,
            passwords=Passwords(policy),
            directory=directory if directory is not None else OnlineDirectory(),
            limiter=build_limiter(settings),
            trusted_proxies=parse_networks(settings.trusted_proxies),
            session_cache=session_cache,
        )


def http_policies(settings: Settings) -> dict[str, Bucket]:
    login = Bucket.per(settings.login_burst, settings.login_refill)
    register = Bucket.per(settings.register_burst, settings.register_refill)
    return {
        # keyed by address (IPv6 by /64)
        "login_address": login,
        # keyed by (username hash, address): guessing one account from one place
        "login_user": login,
        # keyed by username hash: every address together, a much larger ceiling
        "login_user_total": Bucket.per(settings.login_user_burst, settings.login_user_refill),
        "register": register,
        "admin_token": Bucket.per(settings.admin_token_burst, settings.admin_token_refill),
        # keyed by user id: new devices, and envelope writes (the existing client re-shares
        # every channel's key from every device every 30 s, so this bucket is wide)
        "device": Bucket.per(settings.device_burst, settings.device_refill),
        "envelope": Bucket.per(settings.envelope_burst, settings.envelope_refill),
        "message_delete": Bucket.per(settings.message_delete_burst, settings.message_delete_refill),
        # Chat frames per user over all sockets, used when it lives in Redis (else the
        # gateway keeps it in memory: dialtone.realtime.limits).
        "ws_user_chat": Bucket(settings.ws_user_chat_burst, settings.ws_user_chat_rate),
        # keyed by user id: key backup reads and writes
        "key_backup": Bucket.per(settings.key_backup_burst, settings.key_backup_refill),
        # keyed by user id: file uploads (POST /files)
        "file_upload": Bucket.per(settings.file_upload_burst, settings.file_upload_refill),
    }


def build_limiter(settings: Settings) -> Limiter:
    """Memory buckets on one node; Redis buckets, shared by every node, when configured."""
    store: Store
    if settings.redis_url and settings.rate_limits:
        import redis.asyncio as redis

        store = RedisStore(redis.from_url(settings.redis_url), prefix=settings.redis_prefix + "rl:")
    else:
        store = MemoryStore()
    return Limiter(store, http_policies(settings), enabled=settings.rate_limits)
