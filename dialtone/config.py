"""Settings, read once from DIALTONE_* variables and passed down (never a module global)."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from dialtone.errors import ConfigError
from dialtone.security.addresses import parse_networks

DAY = 24 * 60 * 60


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    db_url: str = ""
    username_pepper: bytes = b""
    admin_token: str = ""
    tls_cert: str | None = None
    tls_key: str | None = None
    session_ttl: int = DAY
    invite_ttl: int = DAY
    redis_url: str | None = None
    redis_prefix: str = "dialtone:"
    # Authenticates events between nodes on Redis (required with redis_url).
    cluster_secret: bytes = b""
    node_heartbeat: float = 5.0
    rate_limits: bool = True
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    log_format: str = "text"
    log_level: str = "info"
    turn_secret: str | None = None
    turn_uris: tuple[str, ...] = ()
    turn_ttl: int = DAY
    ws_ping_interval: float = 25.0
    ws_send_queue: int = 1024
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    max_body_bytes: int = 1024 * 1024
    db_timeout: float = 10.0
    # Token buckets for the HTTP edge: a burst, then one more every N seconds.
    login_burst: int = 5
    login_refill: float = 300.0
    # One account, every address together: a ceiling on distributed guessing that a
    # single address cannot drain (its own buckets stop it first); see docs/SECURITY.md.
    login_user_burst: int = 50
    login_user_refill: float = 60.0
    # Wrong X-Admin-Token guesses per address (a right token costs nothing).
    admin_token_burst: int = 10
    admin_token_refill: float = 60.0
    register_burst: int = 3
    register_refill: float = 10.0
    request_timeout: float = 30.0
    max_connections_per_address: int = 64
    purge_interval: float = 300.0
    # Token buckets per WebSocket connection: a burst of frames, then `rate` per second.
    ws_chat_burst: int = 10
    ws_chat_rate: float = 5.0
    ws_signal_burst: int = 50
    ws_signal_rate: float = 20.0
    # Bounded work per member: devices per user; token buckets per user for new devices
    # (login with a new key, POST /devices), envelope writes, and chat frames over all of
    # the user's sockets on a node.
    max_devices_per_user: int = 10
    device_burst: int = 5
    device_refill: float = 300.0
    envelope_burst: int = 200
    envelope_refill: float = 0.1
    # DELETE /channels/messages per user: each deletion writes (and on SQLite erases the
    # freed pages from the file), so a loop of them must not crowd out everyone's chat.
    message_delete_burst: int = 30
    message_delete_refill: float = 1.0
    ws_user_chat_burst: int = 20
    ws_user_chat_rate: float = 10.0
    # Open WebSockets per user, over every node and worker (429 at the handshake).
    max_sockets_per_user: int = 20
    # Server processes on one port (dialtone.workers); more than one needs Redis.
    workers: int = 1
    # PostgreSQL only: wait for the WAL flush (fsync) before acknowledging a message
    # batch. Off trades the last fraction of a second of acknowledged messages on a
    # database or machine crash for a commit that does not wait for the disk.
    message_sync_commit: bool = True
    # The widest network an address ban may cover (a prefix length): one ban can never
    # shut out a whole internet, nor, by accident, most of one provider's customers.
    ban_min_prefix_ipv4: int = 16
    ban_min_prefix_ipv6: int = 48
    # Prometheus metrics at GET /metrics: "" (off), "token" (on the main port, for the
    # operator token or an admin's bearer), or "host:port" (a listener of its own).
    metrics: str = ""
    # Open TCP connections per client address and worker, counted from their accept
    # (dialtone.accept): idle ones too, which the per-request cap above never sees.
    max_open_connections_per_address: int = 256
    # Key backups: the largest blob (decoded bytes) one user may store, and a token bucket
    # per user for writes (a page rewrites its backup whenever it gets a new key).
    key_backup_max_bytes: int = 256 * 1024
    key_backup_burst: int = 30
    key_backup_refill: float = 2.0
    # Files (issue 17). Where their bytes live: "" is <data_dir>/files; a folder on a
    # shared mount lets every node of a cluster serve every file.
    files_dir: str = ""
    # First-run values of the live settings max_file_bytes / user_storage_quota_bytes.
    max_file_bytes: int = 25 * 1024 * 1024
    user_storage_quota_bytes: int = 1024 * 1024 * 1024
    # Uploads per user: a burst, then one more every N seconds.
    file_upload_burst: int = 30
    file_upload_refill: float = 2.0
    # An upload no message (or channel image) claims within this many seconds is swept.
    orphan_file_ttl: int = DAY
    # The deadline of one file upload or download (the request timeout is too short for
    # 25 MiB on a slow link); the per-address cap bounds how many may be open.
    file_transfer_timeout: float = 600.0

    @property
    def files_folder(self) -> str:
        return self.files_dir or str(Path(self.data_dir) / "files")

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


# The one place defaults live: load_settings falls back to these for unset variables.
DEFAULTS = Settings()


def _int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


# The allowed range of each minimum ban prefix: never /0 (the whole internet); at most
# one address.
IPV4_PREFIXES = (8, 32)
IPV6_PREFIXES = (16, 128)


def _prefix(environ: Mapping[str, str], name: str, default: int, bounds: tuple[int, int]) -> int:
    value = _int(environ, name, default, minimum=bounds[0])
    if value > bounds[1]:
        raise ConfigError(f"{name} must be at most {bounds[1]}, got {value}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _duration(environ: Mapping[str, str], name: str, default: int) -> int:
    """Seconds, or a number with an s/m/h/d suffix (``24h``)."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": DAY}
    factor = units.get(text[-1], 0)
    number = text[:-1] if factor else text
    try:
        value = int(number) * (factor or 1)
    except ValueError:
        raise ConfigError(f"{name} must be a duration like 3600, 90m or 24h, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = environ.get(name, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def parse_listen_addr(raw: str) -> tuple[str, int]:
    text = raw.strip()
    if text.startswith(":"):
        text = "0.0.0.0" + text
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"DIALTONE_LISTEN_ADDR must look like host:port, got {raw!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"DIALTONE_LISTEN_ADDR port out of range: {port}")
    return host.strip("[]") or "0.0.0.0", port


def normalise_db_url(raw: str) -> str:
    """Accept SQLAlchemy URLs and the reference's ``postgres://…?sslmode=…`` form."""
    url = raw.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parses the port, so a bad one fails here, not at connect)
    except ValueError as exc:
        raise ConfigError(f"DIALTONE_DB_URL is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in {"postgres", "postgresql", "postgresql+asyncpg"}:
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "sslmode":
                # asyncpg spells it "ssl"; "disable" is its default.
                if value != "disable":
                    query.append(("ssl", value))
            else:
                query.append((key, value))
        return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), ""))
    if scheme in {"sqlite", "sqlite+aiosqlite"}:
        # urlunsplit would fold the empty host of sqlite:////abs/path, so keep the rest as is.
        return "sqlite+aiosqlite" + url[len(parts.scheme) :]
    raise ConfigError(
        f"DIALTONE_DB_URL must be a sqlite:/// or postgres:// URL, not {scheme or '(none)'!r}"
    )


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _write_secret_file(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")


PEPPER_FILE = "username_pepper"
ADMIN_TOKEN_FILE = "admin_token"  # noqa: S105  (a file name, not a secret)


def restrict_folder(folder: Path) -> None:
    """Create the data folder owner-only (0700), or make an existing one so."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if stat.S_IMODE(folder.stat().st_mode) != 0o700:
            folder.chmod(0o700)
    except OSError as exc:
        raise ConfigError(f"cannot make {folder} owner-only (0700): {exc.strerror}") from None


def ensure_secrets(data_dir: str) -> tuple[bool, Path]:
    """Create the pepper and admin token files on first run (mode 0600).

    Returns whether the admin token was created now, and its path.
    """
    folder = Path(data_dir)
    restrict_folder(folder)
    try:
        created = False
        pepper = folder / PEPPER_FILE
        if not pepper.exists():
            _write_secret_file(pepper, secrets.token_hex(32))
        token = folder / ADMIN_TOKEN_FILE
        if not token.exists():
            _write_secret_file(token, secrets.token_urlsafe(32))
            created = True
    except OSError as exc:
        raise ConfigError(f"cannot create secrets in {folder}: {exc.strerror}") from None
    return created, token


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from DIALTONE_* variables. Raises ConfigError with one clear line."""
    env = os.environ if environ is None else environ
    listen = env.get("DIALTONE_LISTEN_ADDR", "").strip()
    host, port = parse_listen_addr(listen) if listen else (DEFAULTS.host, DEFAULTS.port)
    data_dir = env.get("DIALTONE_DATA_DIR", "").strip() or DEFAULTS.data_dir

    raw_db = env.get("DIALTONE_DB_URL", "").strip()
    if raw_db:
        db_url = normalise_db_url(raw_db)
    else:
        db_url = f"sqlite+aiosqlite:///{Path(data_dir).resolve() / 'dialtone.db'}"

    pepper_text = env.get("DIALTONE_USERNAME_PEPPER", "").strip()
    if not pepper_text:
        pepper_path = Path(data_dir) / PEPPER_FILE
        if pepper_path.exists():
            pepper_text = _read_secret_file(pepper_path)
    if pepper_text and len(pepper_text) < 16:
        raise ConfigError("DIALTONE_USERNAME_PEPPER must be at least 16 characters")

    admin_token = env.get("DIALTONE_ADMIN_TOKEN", "").strip()
    if not admin_token:
        token_path = Path(data_dir) / ADMIN_TOKEN_FILE
        if token_path.exists():
            admin_token = _read_secret_file(token_path)
    if admin_token and len(admin_token) < 16:
        raise ConfigError("DIALTONE_ADMIN_TOKEN must be at least 16 characters")

    tls_cert = env.get("DIALTONE_TLS_CERT", "").strip() or None
    tls_key = env.get("DIALTONE_TLS_KEY", "").strip() or None
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("DIALTONE_TLS_CERT and DIALTONE_TLS_KEY must be set together")
    for name, tls_path in (("DIALTONE_TLS_CERT", tls_cert), ("DIALTONE_TLS_KEY", tls_key)):
        if tls_path is not None and not Path(tls_path).is_file():
            raise ConfigError(f"{name} points to {tls_path}, which is not a readable file")

    log_format = env.get("DIALTONE_LOG_FORMAT", "").strip().lower() or DEFAULTS.log_format
    if log_format not in {"text", "json"}:
        raise ConfigError(f"DIALTONE_LOG_FORMAT must be text or json, got {log_format!r}")
    log_level = env.get("DIALTONE_LOG_LEVEL", "").strip().lower() or DEFAULTS.log_level
    if log_level not in {"debug", "info", "warning", "error"}:
        raise ConfigError("DIALTONE_LOG_LEVEL must be debug, info, warning or error")

    turn_secret = env.get("DIALTONE_TURN_SECRET", "").strip() or None
    turn_uris = _list(env, "DIALTONE_TURN_URIS")
    if turn_secret and not turn_uris:
        raise ConfigError("DIALTONE_TURN_SECRET is set but DIALTONE_TURN_URIS is empty")

    trusted_proxies = _list(env, "DIALTONE_TRUSTED_PROXIES")
    try:
        parse_networks(trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"DIALTONE_TRUSTED_PROXIES: {exc}") from None

    redis_url = env.get("DIALTONE_REDIS_URL", "").strip() or None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("DIALTONE_REDIS_URL must start with redis://, rediss:// or unix://")
    cluster_secret = env.get("DIALTONE_CLUSTER_SECRET", "").strip()
    if cluster_secret and len(cluster_secret) < 32:
        raise ConfigError("DIALTONE_CLUSTER_SECRET must be at least 32 characters")
    if redis_url and not cluster_secret:
        raise ConfigError(
            "DIALTONE_REDIS_URL is set but DIALTONE_CLUSTER_SECRET is not: give every node "
            "the same secret of 32+ characters (e.g. `openssl rand -hex 32`)"
        )

    metrics = env.get("DIALTONE_METRICS", "").strip()
    if metrics.lower() in {"off", "false", "0", "no"}:
        metrics = ""
    if metrics and metrics != "token":
        try:
            metrics_address(metrics)
        except ValueError:
            raise ConfigError(
                f"DIALTONE_METRICS must be token or an address like 127.0.0.1:9100, got {metrics!r}"
            ) from None

    return Settings(
        host=host,
        port=port,
        data_dir=data_dir,
        db_url=db_url,
        username_pepper=pepper_text.encode("utf-8"),
        admin_token=admin_token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        session_ttl=_duration(env, "DIALTONE_SESSION_TTL", DEFAULTS.session_ttl),
        invite_ttl=_duration(env, "DIALTONE_INVITE_TTL", DEFAULTS.invite_ttl),
        redis_url=redis_url,
        redis_prefix=env.get("DIALTONE_REDIS_PREFIX", "").strip() or DEFAULTS.redis_prefix,
        cluster_secret=cluster_secret.encode("utf-8"),
        node_heartbeat=_float(env, "DIALTONE_NODE_HEARTBEAT", DEFAULTS.node_heartbeat),
        rate_limits=_bool(env, "DIALTONE_RATE_LIMITS", DEFAULTS.rate_limits),
        trusted_proxies=trusted_proxies,
        cors_origins=_list(env, "DIALTONE_CORS_ORIGINS"),
        log_format=log_format,
        log_level=log_level,
        turn_secret=turn_secret,
        turn_uris=turn_uris,
        turn_ttl=_duration(env, "DIALTONE_TURN_TTL", DEFAULTS.turn_ttl),
        ws_ping_interval=_float(env, "DIALTONE_WS_PING_INTERVAL", DEFAULTS.ws_ping_interval),
        ws_send_queue=_int(env, "DIALTONE_WS_SEND_QUEUE", DEFAULTS.ws_send_queue, minimum=8),
        argon2_memory_kib=_int(
            env, "DIALTONE_ARGON2_MEMORY_KIB", DEFAULTS.argon2_memory_kib, minimum=19 * 1024
        ),
        argon2_time_cost=_int(
            env, "DIALTONE_ARGON2_TIME_COST", DEFAULTS.argon2_time_cost, minimum=2
        ),
        argon2_parallelism=_int(
            env, "DIALTONE_ARGON2_PARALLELISM", DEFAULTS.argon2_parallelism, minimum=1
        ),
        db_timeout=_float(env, "DIALTONE_DB_TIMEOUT", DEFAULTS.db_timeout),
        login_burst=_int(env, "DIALTONE_LOGIN_BURST", DEFAULTS.login_burst, minimum=1),
        login_refill=_float(env, "DIALTONE_LOGIN_REFILL", DEFAULTS.login_refill),
        login_user_burst=_int(
            env, "DIALTONE_LOGIN_USER_BURST", DEFAULTS.login_user_burst, minimum=1
        ),
        login_user_refill=_float(env, "DIALTONE_LOGIN_USER_REFILL", DEFAULTS.login_user_refill),
        admin_token_burst=_int(
            env, "DIALTONE_ADMIN_TOKEN_BURST", DEFAULTS.admin_token_burst, minimum=1
        ),
        admin_token_refill=_float(env, "DIALTONE_ADMIN_TOKEN_REFILL", DEFAULTS.admin_token_refill),
        register_burst=_int(env, "DIALTONE_REGISTER_BURST", DEFAULTS.register_burst, minimum=1),
        register_refill=_float(env, "DIALTONE_REGISTER_REFILL", DEFAULTS.register_refill),
        request_timeout=_float(env, "DIALTONE_REQUEST_TIMEOUT", DEFAULTS.request_timeout),
        max_connections_per_address=_int(
            env,
            "DIALTONE_MAX_CONNECTIONS_PER_ADDRESS",
            DEFAULTS.max_connections_per_address,
            minimum=1,
        ),
        purge_interval=_float(env, "DIALTONE_PURGE_INTERVAL", DEFAULTS.purge_interval),
        ws_chat_burst=_int(env, "DIALTONE_WS_CHAT_BURST", DEFAULTS.ws_chat_burst, minimum=1),
        ws_chat_rate=_float(env, "DIALTONE_WS_CHAT_RATE", DEFAULTS.ws_chat_rate),
        ws_signal_burst=_int(env, "DIALTONE_WS_SIGNAL_BURST", DEFAULTS.ws_signal_burst, minimum=1),
        ws_signal_rate=_float(env, "DIALTONE_WS_SIGNAL_RATE", DEFAULTS.ws_signal_rate),
        max_devices_per_user=_int(
            env, "DIALTONE_MAX_DEVICES_PER_USER", DEFAULTS.max_devices_per_user, minimum=1
        ),
        device_burst=_int(env, "DIALTONE_DEVICE_BURST", DEFAULTS.device_burst, minimum=1),
        device_refill=_float(env, "DIALTONE_DEVICE_REFILL", DEFAULTS.device_refill),
        envelope_burst=_int(env, "DIALTONE_ENVELOPE_BURST", DEFAULTS.envelope_burst, minimum=1),
        envelope_refill=_float(env, "DIALTONE_ENVELOPE_REFILL", DEFAULTS.envelope_refill),
        message_delete_burst=_int(
            env, "DIALTONE_MESSAGE_DELETE_BURST", DEFAULTS.message_delete_burst, minimum=1
        ),
        message_delete_refill=_float(
            env, "DIALTONE_MESSAGE_DELETE_REFILL", DEFAULTS.message_delete_refill
        ),
        ws_user_chat_burst=_int(
            env, "DIALTONE_WS_USER_CHAT_BURST", DEFAULTS.ws_user_chat_burst, minimum=1
        ),
        ws_user_chat_rate=_float(env, "DIALTONE_WS_USER_CHAT_RATE", DEFAULTS.ws_user_chat_rate),
        max_sockets_per_user=_int(
            env, "DIALTONE_MAX_SOCKETS_PER_USER", DEFAULTS.max_sockets_per_user, minimum=1
        ),
        workers=_int(env, "DIALTONE_WORKERS", DEFAULTS.workers, minimum=1),
        message_sync_commit=_bool(
            env, "DIALTONE_MESSAGE_SYNC_COMMIT", DEFAULTS.message_sync_commit
        ),
        ban_min_prefix_ipv4=_prefix(
            env, "DIALTONE_BAN_MIN_PREFIX_IPV4", DEFAULTS.ban_min_prefix_ipv4, IPV4_PREFIXES
        ),
        ban_min_prefix_ipv6=_prefix(
            env, "DIALTONE_BAN_MIN_PREFIX_IPV6", DEFAULTS.ban_min_prefix_ipv6, IPV6_PREFIXES
        ),
        metrics=metrics,
        max_open_connections_per_address=_int(
            env,
            "DIALTONE_MAX_OPEN_CONNECTIONS_PER_ADDRESS",
            DEFAULTS.max_open_connections_per_address,
            minimum=1,
        ),
        key_backup_max_bytes=_int(
            env, "DIALTONE_KEY_BACKUP_MAX_BYTES", DEFAULTS.key_backup_max_bytes, minimum=1024
        ),
        key_backup_burst=_int(
            env, "DIALTONE_KEY_BACKUP_BURST", DEFAULTS.key_backup_burst, minimum=1
        ),
        key_backup_refill=_float(env, "DIALTONE_KEY_BACKUP_REFILL", DEFAULTS.key_backup_refill),
        files_dir=env.get("DIALTONE_FILES_DIR", "").strip(),
        max_file_bytes=_int(env, "DIALTONE_MAX_FILE_BYTES", DEFAULTS.max_file_bytes, minimum=1),
        user_storage_quota_bytes=_int(
            env, "DIALTONE_USER_STORAGE_QUOTA_BYTES", DEFAULTS.user_storage_quota_bytes, minimum=0
        ),
        file_upload_burst=_int(
            env, "DIALTONE_FILE_UPLOAD_BURST", DEFAULTS.file_upload_burst, minimum=1
        ),
        file_upload_refill=_float(env, "DIALTONE_FILE_UPLOAD_REFILL", DEFAULTS.file_upload_refill),
        orphan_file_ttl=_duration(env, "DIALTONE_ORPHAN_FILE_TTL", DEFAULTS.orphan_file_ttl),
        file_transfer_timeout=_float(
            env, "DIALTONE_FILE_TRANSFER_TIMEOUT", DEFAULTS.file_transfer_timeout
        ),
    )


def metrics_address(value: str) -> tuple[str, int]:
    """``host:port`` of DIALTONE_METRICS's own listener (``[::1]:9100`` for IPv6)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(value)
    return host.strip("[]"), int(port)


def require_secrets(settings: Settings) -> None:
    if not settings.username_pepper:
        raise ConfigError(
            "no username pepper: set DIALTONE_USERNAME_PEPPER or run `dialtone serve` once "
            "to create one in the data folder"
        )
    if not settings.admin_token:
        raise ConfigError("no admin token: set DIALTONE_ADMIN_TOKEN")
    if settings.redis_url and not settings.cluster_secret:
        raise ConfigError("DIALTONE_REDIS_URL is set but DIALTONE_CLUSTER_SECRET is not")
