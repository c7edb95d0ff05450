"""dialtone serve | migrate | invite create | admin ..."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from dialtone.config import (
    PEPPER_FILE,
    Settings,
    ensure_secrets,
    load_settings,
    metrics_address,
    require_secrets,
    restrict_folder,
)
from dialtone.errors import ConfigError


async def _count_accounts_async(settings: Settings) -> int:
    from sqlalchemy import func, inspect, select

    from dialtone.db.engine import create_engine
    from dialtone.db.models import User

    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            has_users = await conn.run_sync(lambda sync: inspect(sync).has_table("users"))
            if not has_users:
                return 0
            count = await conn.scalar(select(func.count()).select_from(User))
            return int(count or 0)
    finally:
        await engine.dispose()


def _count_accounts(settings: Settings) -> int:
    """How many user rows the configured database holds (0 when it does not exist yet)."""
    from dialtone.db.migrate import sqlite_path

    path = sqlite_path(settings.db_url)
    if path is not None and not path.exists():
        return 0
    try:
        return asyncio.run(_count_accounts_async(settings))
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        raise _database_error(settings, exc) from None


def _refuse_new_pepper_over_accounts(settings: Settings) -> None:
    """A new pepper over existing accounts orphans all of them (their names hash
    differently, can no longer log in, and can be registered by anyone): refuse."""
    if settings.username_pepper:
        return
    accounts = _count_accounts(settings)
    if accounts:
        raise ConfigError(
            f"the database already holds {accounts} account(s) but the username pepper is "
            f"missing ({Path(settings.data_dir) / PEPPER_FILE} or DIALTONE_USERNAME_PEPPER): "
            "restore it from your backup; a new one would orphan every account"
        )


def _settings_with_secrets() -> Settings:
    settings = load_settings()
    _refuse_new_pepper_over_accounts(settings)
    configured = os.environ.get("DIALTONE_USERNAME_PEPPER") and os.environ.get(
        "DIALTONE_ADMIN_TOKEN"
    )
    if not configured:
        created, token_path = ensure_secrets(settings.data_dir)
        settings = load_settings()
        if created and not os.environ.get("DIALTONE_ADMIN_TOKEN"):
            print(f"dialtone: first run: created secrets in {settings.data_dir} (mode 0600)")
            print(f"dialtone: admin token: {settings.admin_token}")
        elif not os.environ.get("DIALTONE_ADMIN_TOKEN"):
            print(f"dialtone: admin token is in {token_path}")
    require_secrets(settings)
    return settings


def _database_error(settings: Settings, exc: BaseException) -> ConfigError:
    """One line naming the database (password hidden) and the first line of the cause."""
    from sqlalchemy.engine import make_url

    where = make_url(settings.db_url).render_as_string(hide_password=True)
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return ConfigError(f"cannot use the database {where}: {reason}")


def _migrate(settings: Settings) -> None:
    from dialtone.db.migrate import (
        current_revision,
        refuse_newer_schema,
        restrict_sqlite_files,
        upgrade,
    )

    try:
        if settings.is_sqlite:
            restrict_folder(Path(settings.data_dir))
        if sqlite_exists(settings):
            refuse_newer_schema(settings.db_url, current_revision(settings.db_url))
        upgrade(settings.db_url)
        restrict_sqlite_files(settings.db_url)
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        raise _database_error(settings, exc) from None


def _redis_where(url: str) -> str:
    """The Redis URL with any password replaced (it may sit in the user-info part)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


async def _ping_redis(url: str, wait: float) -> None:
    from redis import asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(url, socket_connect_timeout=wait, socket_timeout=wait)
    try:
        await client.ping()
    finally:
        await client.aclose()


def _check_redis(settings: Settings) -> None:
    """Reach Redis once before serving: otherwise the failure surfaces inside the
    server's lifespan, as a traceback."""
    if not settings.redis_url:
        return
    from redis.exceptions import RedisError

    try:
        asyncio.run(_ping_redis(settings.redis_url, settings.db_timeout))
    except (OSError, RedisError, TimeoutError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot reach Redis at {_redis_where(settings.redis_url)}: {reason}"
        ) from None


def _check_port(settings: Settings) -> None:
    """Bind the address once before anything else, so a port in use is our one line
    rather than uvicorn's log record (uvicorn binds the same way, with SO_REUSEADDR)."""
    _probe(settings.host, settings.port, "")
    if settings.metrics and settings.metrics != "token":
        # DIALTONE_METRICS's own listener, bound the same way by prometheus_client.
        _probe(*metrics_address(settings.metrics), "DIALTONE_METRICS: ")


def _probe(host: str, port: int, what: str) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{what}cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"{what}cannot listen on {host}:{port}: "
                f"{exc.strerror or exc} (is another server running there?)"
            ) from None


def _check_tls(settings: Settings) -> None:
    """Load the certificate pair now, so a bad one is one line rather than a traceback."""
    if not (settings.tls_cert and settings.tls_key):
        return
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"DIALTONE_TLS_CERT/DIALTONE_TLS_KEY cannot be loaded as a PEM certificate and its "
            f"private key: {exc}"
        ) from None


def cmd_serve(_: argparse.Namespace) -> int:
    from dialtone.workers import check_workers

    check_workers(load_settings())  # before any first-run side effect
    settings = _settings_with_secrets()
    _check_tls(settings)
    _check_port(settings)
    _check_redis(settings)
    from dialtone.logs import configure_logging
    from dialtone.server import serve

    configure_logging(settings.log_format, settings.log_level)
    _migrate(settings)
    scheme = "https" if settings.tls_cert else "http"
    print(f"dialtone: listening on {scheme}://{settings.host}:{settings.port}", flush=True)
    from dialtone.workers import freeze_startup_heap, run_workers

    if settings.workers > 1:
        return run_workers(settings)
    freeze_startup_heap()
    serve(settings)
    return 0


# `dialtone migrate --check` exit codes, for scripts.
CHECK_CURRENT, CHECK_BEHIND, CHECK_AHEAD = 0, 1, 3


def cmd_migrate_check(settings: Settings) -> int:
    """Say whether the database is behind the code; change nothing."""
    from dialtone.db.migrate import current_revision, known_revision, newest_revision

    head = newest_revision()
    try:
        current = current_revision(settings.db_url) if sqlite_exists(settings) else None
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        raise _database_error(settings, exc) from None
    if current == head:
        print(f"dialtone: database is current (revision {head})")
        return CHECK_CURRENT
    if current is not None and not known_revision(current):
        print(
            f"dialtone: database is at revision {current}, newer than this version knows "
            f"(its newest is {head})"
        )
        return CHECK_AHEAD
    print(
        f"dialtone: database is behind: at revision {current or 'base (empty)'}, the code "
        f"needs {head}; run dialtone migrate (dialtone serve does it on start)"
    )
    return CHECK_BEHIND


def cmd_migrate(args: argparse.Namespace) -> int:
    from dialtone.db.migrate import current_revision, downgrade, newest_revision

    settings = load_settings()
    if args.check:
        return cmd_migrate_check(settings)
    try:
        before = current_revision(settings.db_url) if sqlite_exists(settings) else None
        if args.revision == "head":
            _migrate(settings)
        else:
            downgrade(settings.db_url, args.revision)
        after = current_revision(settings.db_url)
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        raise _database_error(settings, exc) from None
    newest = " (the newest)" if after is not None and after == newest_revision() else ""
    if before == after:
        print(f"dialtone: database already at revision {after or 'base (empty)'}{newest}")
    else:
        print(
            f"dialtone: database migrated from revision {before or 'base (empty)'}"
            f" to {after or 'base (empty)'}{newest}"
        )
    return 0


def sqlite_exists(settings: Settings) -> bool:
    """False for a SQLite file not created yet (reading its revision would create it
    before the data folder is restricted); True for every other database."""
    from dialtone.db.migrate import sqlite_path

    path = sqlite_path(settings.db_url)
    return path is None or path.exists()


async def _create_invite(settings: Settings) -> tuple[str, str]:
    from dialtone.db.engine import create_engine, create_sessionmaker
    from dialtone.db.unit_of_work import UnitOfWork
    from dialtone.schemas.common import rfc3339
    from dialtone.services.context import ServerContext
    from dialtone.services.invites import InviteService

    engine = create_engine(settings)

    async def no_events(_: object) -> None:
        return None

    try:
        async with UnitOfWork(create_sessionmaker(engine), no_events) as uow:
            token, expires_at = await InviteService(
                uow, ServerContext.from_settings(settings)
            ).create()
    finally:
        await engine.dispose()
    return token, rfc3339(expires_at)


def invite_link(settings: Settings, token: str, base_url: str | None = None) -> str:
    """The web client's registration link for an invite: `<base>/#invite=<token>`.

    The token sits in the fragment, so browsers never send it to the server in a URL.
    """
    if not base_url:
        scheme = "https" if settings.tls_cert else "http"
        host = settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        base_url = f"{scheme}://{host}:{settings.port}"
    return f"{base_url.rstrip('/')}/#invite={token}"


def cmd_invite_create(args: argparse.Namespace) -> int:
    settings = load_settings()
    _migrate(settings)
    token, expires_at = asyncio.run(_create_invite(settings))
    print(invite_link(settings, token, args.base_url) if args.link else token)
    print(f"expires at {expires_at}", file=sys.stderr)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from dialtone.db.backup import backup

    settings = load_settings()
    try:
        manifest = backup(settings, args.path)
    except (OSError, SQLAlchemyError, TimeoutError, sqlite3.Error) as exc:
        raise _database_error(settings, exc) from None
    print(
        f"dialtone: backed up the {manifest.database} database at revision "
        f"{manifest.revision or 'base (empty)'} to {args.path} ({', '.join(manifest.files)})"
    )
    if PEPPER_FILE not in manifest.files:
        print(
            "dialtone: the username pepper comes from DIALTONE_USERNAME_PEPPER, not the data "
            "folder: keep it with this backup, no account signs in without it"
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from dialtone.db.backup import restore
    from dialtone.db.migrate import current_revision

    settings = load_settings()
    try:
        manifest = restore(settings, args.path, force=args.force)
        after = current_revision(settings.db_url)
    except (OSError, SQLAlchemyError, TimeoutError, sqlite3.Error) as exc:
        raise _database_error(settings, exc) from None
    print(
        f"dialtone: restored the backup of {manifest.created_at} (revision "
        f"{manifest.revision or 'base (empty)'}); the database is now at revision {after}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialtone", description="Dialtone chat server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate the database and run the server")
    serve.set_defaults(func=cmd_serve)
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument(
        "--check",
        action="store_true",
        help="only say whether the database is behind the code: exit 0 current, 1 behind, "
        "3 newer than this version",
    )
    migrate.set_defaults(func=cmd_migrate)
    invite = sub.add_parser("invite", help="manage server invites")
    invite_sub = invite.add_subparsers(dest="invite_command", required=True)
    create = invite_sub.add_parser("create", help="create a single-use invite and print it")
    create.add_argument(
        "--link", action="store_true", help="print a link that opens registration in the web client"
    )
    create.add_argument(
        "--base-url",
        help="the server's public address for --link (default: from DIALTONE_LISTEN_ADDR)",
    )
    create.set_defaults(func=cmd_invite_create)
    backup = sub.add_parser(
        "backup", help="copy the database and data-folder secrets into a new folder, while serving"
    )
    backup.add_argument("path", type=Path, help="a new (or empty) folder for the backup")
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser(
        "restore", help="put a backup back into the configured database and data folder"
    )
    restore.add_argument("path", type=Path, help="a folder made by dialtone backup")
    restore.add_argument(
        "--force", action="store_true", help="overwrite a database that already holds data"
    )
    restore.set_defaults(func=cmd_restore)
    from dialtone.admin_cli import add_admin_parser

    add_admin_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Everything this process creates (database, WAL, secrets) is for its owner only.
    os.umask(0o077)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"dialtone: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Start-up failures are one line; the details are in the exception's text.
        text = (str(exc).strip().splitlines() or [""])[0]
        print(f"dialtone: {args.command} failed: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    return result
