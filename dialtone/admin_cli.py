"""``dialtone admin users|bans|invites|log|settings ...``: administration on the database
directly, so it helps when the HTTP API is down.

Tables for people, ``--json`` for scripts. Exit codes: 0 done; 1 refused (not found,
conflict such as the last admin, bad value); 2 usage or configuration error; 3 the
database could not be used. Changes reach running nodes through the Redis broker when
DIALTONE_REDIS_URL is set (sockets close at once); otherwise each node picks up bans
and settings within ADMIN_REFRESH_SECONDS, and a revoked session stops working at its
next request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from dialtone.config import Settings, load_settings
from dialtone.errors import ConfigError, DialtoneError

EXIT_REFUSED = 1
EXIT_DATABASE = 3

Action = Callable[[Any, argparse.Namespace], Awaitable[tuple[list[Any], list[str]]]]


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    factor = units.get(value[-1:], 0)
    try:
        seconds = int(value[:-1] if factor else value) * (factor or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration like 3600, 90m, 12h or 7d: {text}"
        ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return seconds


def _value(text: str) -> Any:
    """A setting's value: JSON (true, 5, 2.5, "text"), or else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------- actions
# Each gets the AdminService and the arguments; returns rows (Structs) and columns.


async def users_list(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from dialtone.api.admin import user_out

    page = await admin.list_users(
        args.limit, args.cursor, locked=True if args.locked else None, role=args.role
    )
    columns = ["id", "created_at", "is_admin", "is_moderator", "is_trusted", "is_locked"]
    columns += ["device_count", "last_seen_at"]
    return [user_out(r) for r in page.items], columns


def _flag_action(flags: Callable[[argparse.Namespace], dict[str, bool]]) -> Action:
    async def action(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
        from dialtone.api.admin import user_out

        row = await admin.update_user(None, args.user_id, flags(args))
        return [user_out(row)], ["id", "is_admin", "is_moderator", "is_trusted", "is_locked"]

    return action


async def users_kick(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    # From outside the server a kick is what reaches every node: sessions end.
    await admin.kick(None, args.user_id)
    await admin.end_sessions(None, args.user_id)
    return [{"id": args.user_id, "status": "kicked"}], ["id", "status"]


async def users_delete(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    erased = await admin.delete_user(None, args.user_id, messages=args.messages)
    return [{"id": args.user_id, "deleted_messages": erased}], ["id", "deleted_messages"]


BAN_COLUMNS = ["id", "user_id", "address", "expires_at", "active", "created_by", "comment"]


async def bans_list(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from dialtone.api.admin import ban_out

    page = await admin.list_bans(
        args.limit, args.cursor, active=True if args.active else None, user_id=None
    )
    return [ban_out(b, admin.ctx) for b in page.items], BAN_COLUMNS


async def bans_add(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from dialtone.api.admin import ban_out

    ban = await admin.ban(
        None,
        user_id=args.user,
        address=args.address,
        expires_at=args.expires,
        duration_seconds=args.duration,
        comment=args.comment,
    )
    return [ban_out(ban, admin.ctx)], BAN_COLUMNS


async def bans_remove(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    await admin.unban(None, args.ban_id)
    return [{"id": args.ban_id, "status": "lifted"}], ["id", "status"]


INVITE_COLUMNS = ["id", "state", "uses", "max_uses", "created_at", "expires_at"]


async def invites_list(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from dialtone.api.admin import invite_out

    page = await admin.list_invites(args.limit, args.cursor, args.state)
    return [invite_out(i, admin.ctx) for i in page.items], INVITE_COLUMNS


async def invites_create(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from dialtone.schemas.common import rfc3339

    token, invite = await admin.create_invite(None, args.ttl, args.max_uses)
    row = {
        "id": invite.id,
        "token": token,
        "max_uses": invite.max_uses,
        "expires_at": rfc3339(invite.expires_at),
    }
    return [row], ["id", "token", "max_uses", "expires_at"]


async def invites_revoke(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    await admin.revoke_invite(None, args.invite_id)
    return [{"id": args.invite_id, "status": "revoked"}], ["id", "status"]


async def log_read(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from dialtone.api.admin import log_out

    page = await admin.read_log(
        args.limit, args.cursor, topic=args.topic, user_id=args.user, after=args.after
    )
    columns = ["id", "at", "level", "topic", "user_id", "device_id", "actor_id", "address"]
    return [log_out(e) for e in page.items], [*columns, "message"]


async def settings_get(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from dialtone.errors import InvalidInput

    values = admin.ctx.live_settings.values
    if args.name is not None and args.name not in values:
        raise InvalidInput(f"unknown setting {args.name!r}", code="unknown_setting")
    names = [args.name] if args.name else sorted(values)
    return [{"name": n, "value": values[n]} for n in names], ["name", "value"]


async def settings_set(admin: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    changed = await admin.change_settings(None, {args.name: _value(args.value)})
    return [{"name": n, "value": v} for n, v in changed.items()], ["name", "value"]


# ---------------------------------------------------------------- running one action


async def _run(settings: Settings, action: Action, args: argparse.Namespace) -> list[Any]:
    from dialtone.db.engine import create_engine, create_sessionmaker
    from dialtone.db.unit_of_work import UnitOfWork
    from dialtone.realtime.broker import Broker, make_broker
    from dialtone.services.admin import AdminService
    from dialtone.services.context import ServerContext
    from dialtone.services.maintenance import checkpoint_sqlite, refresh_admin_state

    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    ctx = ServerContext.from_settings(settings)
    broker: Broker | None = None
    try:
        await refresh_admin_state(sessionmaker, ctx)
        if settings.redis_url:
            broker = make_broker(settings.redis_url, settings.redis_prefix, settings.cluster_secret)

            async def ignore(_: object) -> None:
                return None

            await broker.start(ignore)

        async def publish(events: list[Any]) -> None:
            if broker is not None:
                await broker.publish(events)

        async with UnitOfWork(sessionmaker, publish) as uow:
            rows, columns = await action(AdminService(uow, ctx), args)
        await ctx.server_log.flush()
        if getattr(args, "messages", False):
            await checkpoint_sqlite(sessionmaker)
    finally:
        if broker is not None:
            await broker.stop()
        ctx.hashing.close()
        await engine.dispose()
    args.columns = columns
    return rows


def run_admin(args: argparse.Namespace) -> int:
    settings = load_settings()
    action: Action = args.action
    try:
        rows = asyncio.run(_run(settings, action, args))
    except DialtoneError as exc:
        print(f"dialtone: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        from dialtone.cli import _database_error

        print(f"dialtone: {_database_error(settings, exc)}", file=sys.stderr)
        return EXIT_DATABASE
    plain = [msgspec.to_builtins(r) for r in rows]
    if args.json:
        print(json.dumps(plain, indent=2))
    elif plain:
        print(_table(plain, args.columns))
    else:
        print("(none)")
    return 0


def add_admin_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="administration on the database directly")
    groups = admin.add_subparsers(dest="admin_group", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    paged = argparse.ArgumentParser(add_help=False)
    paged.add_argument("--limit", type=int, default=None, help="rows per page (default 50)")
    paged.add_argument("--cursor", default=None, help="next_cursor of a previous page")

    def command(
        parent: Any, name: str, action: Action, help_text: str, *extra: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, parents=[common, *extra]
        )
        parser.set_defaults(func=run_admin, action=action, func_name=name)
        return parser

    users = groups.add_parser("users", help="accounts (by id: the server has no usernames)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    listing = command(users_sub, "list", users_list, "list accounts", paged)
    listing.add_argument("--locked", action="store_true", help="only locked accounts")
    listing.add_argument("--role", choices=["admin", "moderator", "trusted", "member"])
    for name, flags, help_text in [
        ("lock", lambda a: {"is_locked": True}, "lock an account and end its sessions"),
        ("unlock", lambda a: {"is_locked": False}, "unlock an account"),
        ("promote", lambda a: {f"is_{a.role}": True}, "make a moderator (or --role admin)"),
        ("demote", lambda a: {f"is_{a.role}": False}, "take the moderator (or admin) flag"),
    ]:
        parser = command(users_sub, name, _flag_action(flags), help_text)
        parser.add_argument("user_id")
        if name in ("promote", "demote"):
            parser.add_argument("--role", choices=["moderator", "admin"], default="moderator")
    command(users_sub, "kick", users_kick, "end every session of a user").add_argument("user_id")
    deleting = command(users_sub, "delete", users_delete, "delete an account")
    deleting.add_argument("user_id")
    deleting.add_argument("--messages", action="store_true", help="delete their messages too")

    bans = groups.add_parser("bans", help="user and address bans")
    bans_sub = bans.add_subparsers(dest="bans_command", required=True)
    command(bans_sub, "list", bans_list, "list bans", paged).add_argument(
        "--active", action="store_true", help="only bans in force"
    )
    adding = command(bans_sub, "add", bans_add, "ban a user or an address/CIDR")
    target = adding.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="user id")
    target.add_argument("--address", help="IPv4/IPv6 address or CIDR subnet")
    expiry = adding.add_mutually_exclusive_group()
    expiry.add_argument("--duration", type=_duration, help="e.g. 3600, 90m, 12h, 7d")
    expiry.add_argument("--expires", help="RFC 3339 time")
    adding.add_argument("--comment", default="")
    for name in ("remove", "unban"):
        command(bans_sub, name, bans_remove, "lift a ban").add_argument("ban_id")

    invites = groups.add_parser("invites", help="server invites")
    invites_sub = invites.add_subparsers(dest="invites_command", required=True)
    command(invites_sub, "list", invites_list, "list invites (never their tokens)", paged)
    invites_sub.choices["list"].add_argument(
        "--state", choices=["active", "consumed", "expired", "revoked"]
    )
    creating = command(invites_sub, "create", invites_create, "create an invite, print its token")
    creating.add_argument("--ttl", type=_duration, default=None)
    creating.add_argument("--max-uses", type=int, default=None)
    command(invites_sub, "revoke", invites_revoke, "revoke an invite").add_argument("invite_id")

    reading = command(groups, "log", log_read, "read the server log, newest first", paged)
    reading.add_argument("--topic")
    reading.add_argument("--user", help="entries about or by this user id")
    reading.add_argument("--after", help="RFC 3339 time")

    settings = groups.add_parser("settings", help="live settings")
    settings_sub = settings.add_subparsers(dest="settings_command", required=True)
    command(settings_sub, "get", settings_get, "show settings").add_argument("name", nargs="?")
    setting = command(settings_sub, "set", settings_set, "change one setting")
    setting.add_argument("name")
    setting.add_argument("value", help="JSON (true, 30, 2.5) or text")


def admin_main(argv: Sequence[str]) -> int:
    """For tests and scripts: the same as ``dialtone admin ...``."""
    from dialtone.cli import main

    try:
        return main(["admin", *argv])
    except ConfigError as exc:
        print(f"dialtone: configuration error: {exc}", file=sys.stderr)
        return 2
