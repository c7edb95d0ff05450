"""Administration use cases: statistics, accounts, bans, invites, settings, the log.

Everything works on ids: the server never learns a username, so nothing here shows
or logs one. ``actor`` is the admin or moderator calling, or None for the operator's
``X-Admin-Token`` (and the command line), which counts as an admin.

Rules: only admins change flags, settings and invites; moderators may kick, ban and
unban ordinary members (not admins or moderators) and delete any message; no one but
an admin acts on an admin; at least one unlocked admin always remains (409).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from dialtone import __version__
from dialtone.db.models import Ban, Invite, ServerLogEntry, User
from dialtone.db.repositories.admin import BanRepository, ServerLogRepository, SettingRepository
from dialtone.db.repositories.channels import ChannelRepository
from dialtone.db.repositories.files import FileRepository
from dialtone.db.repositories.invites import InviteRepository
from dialtone.db.repositories.members import MemberRepository
from dialtone.db.repositories.messages import MessageModeration, Tombstone
from dialtone.db.repositories.sessions import SessionRepository
from dialtone.db.repositories.users import UserRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import Conflict, Forbidden, InvalidInput, NotFound
from dialtone.schemas.common import rfc3339
from dialtone.schemas.events import (
    BanAdded,
    BanRemoved,
    ChannelMessageDeleted,
    DisconnectUsers,
    ServerAnnouncement,
    ServerInfoUpdated,
    SessionsRevoked,
    SettingsChanged,
    UserRoleUpdated,
)
from dialtone.security import tokens
from dialtone.security.addresses import Network
from dialtone.services.auth import rate_limit
from dialtone.services.bans import BanRule, parse_ban_address, parse_ip
from dialtone.services.context import Caller, ServerContext
from dialtone.services.files import FileService
from dialtone.services.live_settings import Value, validate
from dialtone.services.pagination import decode_cursor, encode_cursor, page_limit
from dialtone.services.rotation import mark_rooms_of
from dialtone.services.server_log import TOPICS
from dialtone.services.times import parse_time

log = logging.getLogger("dialtone.admin")

OPERATOR = "operator"
ROLES = frozenset({"admin", "moderator", "trusted", "member"})
INVITE_STATES = frozenset({"active", "consumed", "expired", "revoked"})
MAX_COMMENT = 500
EVENT_IDS = 500  # message ids per channel.message.deleted event
# /admin/stats counts the last minute's messages among this many newest (a bounded walk).
RECENT_MESSAGES_CAP = 50_000


def actor_id(actor: Caller | None) -> str:
    return OPERATOR if actor is None else actor.user_id


def is_admin(actor: Caller | None) -> bool:
    return actor is None or actor.is_admin


def _time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    at, key = decode_cursor(cursor, (str, str))
    return parse_time(str(at), "cursor"), str(key)


def _next(rows: Sequence[Any], limit: int, *key: str | int) -> str | None:
    return encode_cursor(*key) if len(rows) == limit else None


@dataclass
class UserRow:
    user: User
    device_count: int
    last_seen_at: datetime | None
    online: bool
    storage_bytes: int = 0  # bytes of the files the user uploaded (issue 17)


T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def ban_rule(ban: Ban) -> BanRule:
    return BanRule(
        id=ban.id,
        user_id=ban.user_id,
        network=parse_ban_address(ban.address) if ban.address else None,
        expires_at=ban.expires_at,
    )


def ban_added(ban: Ban) -> BanAdded:
    return BanAdded(
        id=ban.id,
        user_id=ban.user_id,
        address=ban.address,
        expires_at=rfc3339(ban.expires_at) if ban.expires_at else None,
    )


def rule_from_event(event: BanAdded) -> BanRule:
    return BanRule(
        id=event.id,
        user_id=event.user_id,
        network=parse_ban_address(event.address) if event.address else None,
        expires_at=parse_time(event.expires_at, "expires_at") if event.expires_at else None,
    )


class AdminService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        session = uow.session
        self.users = UserRepository(session)
        self.sessions = SessionRepository(session)
        self.bans = BanRepository(session)
        self.invites = InviteRepository(session)
        self.settings = SettingRepository(session)
        self.server_log = ServerLogRepository(session)
        self.messages = MessageModeration(session)
        self.channels = ChannelRepository(session)

    async def _log(self, topic: str, actor: Caller | None, **fields: Any) -> None:
        await self.ctx.server_log.add(self.uow.session, topic, actor_id=actor_id(actor), **fields)
        # "message" is a LogRecord attribute: it goes to the process log as "detail".
        extra = {("detail" if k == "message" else k): v for k, v in fields.items()}
        log.info(topic, extra={"event": topic, "actor_id": actor_id(actor), **extra})

    # ------------------------------------------------------------ statistics

    async def stats(self) -> dict[str, Any]:
        directory = self.ctx.directory
        voice = directory.voice_rooms()
        files, stored = await FileRepository(self.uow.session).total()
        return {
            "users": await self.users.count(),
            "online_users": len(directory.online_users()),
            "sockets": directory.socket_count(),
            "channels": len(await self.channels.all()),
            "messages": await self.messages.count(),
            "messages_last_minute": await self.messages.count_sent_since(
                self.ctx.clock() - timedelta(minutes=1), RECENT_MESSAGES_CAP
            ),
            "voice_rooms": [
                {"channel_id": channel, "members": len(members)}
                for channel, members in sorted(voice.items())
            ],
            "uptime_seconds": int(time.monotonic() - self.ctx.started),
            "version": __version__,
            "nodes": directory.nodes(),
            "bans": len(self.ctx.bans),
            "files": files,
            "storage_bytes": stored,
        }

    # ------------------------------------------------------------ users

    async def list_users(
        self,
        limit: int | None,
        cursor: str | None,
        *,
        online: bool | None = None,
        locked: bool | None = None,
        role: str | None = None,
    ) -> Page[UserRow]:
        if role is not None and role not in ROLES:
            raise InvalidInput(
                "role must be admin, moderator, trusted or member", code="invalid_role"
            )
        size = page_limit(limit)
        present = self.ctx.directory.online_users()
        rows = await self.users.page(
            size,
            _time_cursor(cursor),
            locked=locked,
            role=role,
            only_ids=present if online is True else None,
            except_ids=present if online is False else None,
        )
        used = await FileRepository(self.uow.session).used_by_users([u.id for u, _, _ in rows])
        items = [
            UserRow(
                user=u,
                device_count=n or 0,
                last_seen_at=seen,
                online=u.id in present,
                storage_bytes=used.get(u.id, 0),
            )
            for u, n, seen in rows
        ]
        last = items[-1].user if items else None
        return Page(items, _next(items, size, rfc3339(last.created_at), last.id) if last else None)

    async def _target(self, actor: Caller | None, user_id: str) -> User:
        """The user acted on; moderators may act on ordinary members only."""
        user = await self.users.get(user_id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        if (user.is_admin or user.is_moderator) and not is_admin(actor):
            raise Forbidden("only an admin may act on admins and moderators", code="not_admin")
        return user

    async def _keep_an_admin(self) -> None:
        """Called after the write that could remove the last unlocked admin."""
        if await self.users.unlocked_admins() == 0:
            raise Conflict("at least one unlocked admin must remain", code="last_admin")

    async def update_user(
        self, actor: Caller | None, user_id: str, changes: dict[str, bool]
    ) -> UserRow:
        if not changes:
            raise InvalidInput("give at least one flag to change", code="invalid_input")
        await self.users.lock_admin_changes()
        user = await self._target(actor, user_id)
        before = {name: bool(getattr(user, name)) for name in changes}
        self.ctx.sessions_changing(self.uow)
        await self.users.set_flags(user_id, changes)
        if changes.get("is_admin") is False or changes.get("is_locked") is True:
            await self._keep_an_admin()
        await self.uow.session.refresh(user)
        if changes.get("is_locked") and not before["is_locked"]:
            await self.sessions.delete_for_user(user_id)
            self.uow.emit(SessionsRevoked(user_id=user_id))
            await mark_rooms_of(self.uow, user_id)  # its devices hold the rooms' keys
            await self._log("lock", actor, user_id=user_id)
        elif changes.get("is_locked") is False and before["is_locked"]:
            await self._log("unlock", actor, user_id=user_id)
        flags = {k: v for k, v in changes.items() if k != "is_locked" and before[k] != v}
        if "is_admin" in flags or "is_moderator" in flags:
            # After commit, on every node: the user's page changes its controls, everyone's
            # its list of staff, without a reload.
            self.uow.emit(
                UserRoleUpdated(
                    sender=user_id,
                    is_admin=bool(user.is_admin),
                    is_moderator=bool(user.is_moderator),
                )
            )
        if flags:
            text = ", ".join(f"{k}={'true' if v else 'false'}" for k, v in sorted(flags.items()))
            await self._log("flags", actor, user_id=user_id, message=text)
        counts = await self.users.page(1, None, only_ids=[user_id])
        _, n, seen = counts[0]
        online = user_id in self.ctx.directory.online([user_id])
        used = await FileRepository(self.uow.session).used_by(user_id)
        return UserRow(
            user=user, device_count=n or 0, last_seen_at=seen, online=online, storage_bytes=used
        )

    async def kick(self, actor: Caller | None, user_id: str) -> None:
        await self._target(actor, user_id)
        self.uow.emit(DisconnectUsers(user_ids=[user_id], reason="kicked"))
        await self._log("kick", actor, user_id=user_id)

    async def end_sessions(self, actor: Caller | None, user_id: str) -> None:
        await self._target(actor, user_id)
        self.ctx.sessions_changing(self.uow)
        await self.sessions.delete_for_user(user_id)
        self.uow.emit(SessionsRevoked(user_id=user_id))
        await self._log("sessions_revoked", actor, user_id=user_id)

    async def delete_user(self, actor: Caller | None, user_id: str, *, messages: bool) -> int:
        """Remove the account: devices, sessions, key envelopes and profile go with it
        (foreign keys cascade); its messages stay unless ``messages``."""
        await self.users.lock_admin_changes()
        await self._target(actor, user_id)
        erased = await self.erase_messages(actor, user_id, None) if messages else 0
        self.ctx.sessions_changing(self.uow)
        # Before the delete, which takes the user's memberships with it.
        await mark_rooms_of(self.uow, user_id)
        if not await self.users.delete(user_id):
            # Deleted by a concurrent request between our read and this statement.
            raise NotFound("user not found", code="user_not_found")
        await self._keep_an_admin()
        self.uow.emit(SessionsRevoked(user_id=user_id))
        await self._log("user_deleted", actor, user_id=user_id, message=f"{erased} messages")
        return erased

    async def moderators(self) -> list[tuple[str, bool, bool]]:
        return [(row[0], bool(row[1]), bool(row[2])) for row in await self.users.staff()]

    # ------------------------------------------------------------ messages

    def _announce_deleted(self, erased: Sequence[tuple[str, str]]) -> None:
        by_channel: dict[str, list[str]] = defaultdict(list)
        for message_id, channel_id in erased:
            by_channel[channel_id].append(message_id)
        for channel_id, ids in by_channel.items():
            for start in range(0, len(ids), EVENT_IDS):
                self.uow.emit(
                    ChannelMessageDeleted(
                        channel_id=channel_id, message_ids=ids[start : start + EVENT_IDS]
                    )
                )

    async def delete_message(self, caller: Caller, message_id: str) -> bool:
        """By its sender, a moderator or an admin. Deleting twice is not an error.

        True when this call erased the message (False: it was already gone), so the
        caller runs the SQLite checkpoint only when there is something to push out of
        the file. Every call, refused or not, spends the user's deletion bucket."""
        await rate_limit(self.ctx, "message_delete", caller.user_id)
        message = await self.messages.get(message_id)
        # A message of a private room the caller is not in is not there for them.
        if message is None or (
            await MemberRepository(self.uow.session).visible(message.channel_id, caller.user_id)
            is None
        ):
            raise NotFound("message not found", code="message_not_found")
        if message.sender_id != caller.user_id and not caller.is_staff:
            raise Forbidden(
                "only the sender, a moderator or an admin may delete a message",
                code="not_allowed",
            )
        erased = await self.messages.erase(
            by=caller.user_id, now=self.ctx.clock(), message_id=message_id
        )
        if erased:
            await FileService(self.uow, self.ctx).delete_for_messages([m for m, _ in erased])
            self._announce_deleted(erased)
            await self._log(
                "message_deleted", caller, user_id=message.sender_id, message="1 message"
            )
        return bool(erased)

    async def erase_messages(
        self, actor: Caller | None, user_id: str, channel_id: str | None
    ) -> int:
        """All of one user's messages, in one channel or everywhere, in one statement."""
        if channel_id is not None and not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        erased = await self.messages.erase(
            by=actor_id(actor), now=self.ctx.clock(), sender_id=user_id, channel_id=channel_id
        )
        if erased:
            await FileService(self.uow, self.ctx).delete_for_messages([m for m, _ in erased])
            self._announce_deleted(erased)
            count = f"{len(erased)} messages"
            await self._log("message_deleted", actor, user_id=user_id, message=count)
        return len(erased)

    async def deletions(
        self,
        channel_id: str,
        since: str | None,
        limit: int | None,
        cursor: str | None,
        caller: Caller | None = None,
    ) -> Page[Tombstone]:
        members = MemberRepository(self.uow.session)
        if caller is not None and await members.visible(channel_id, caller.user_id) is None:
            raise NotFound("channel not found", code="channel_not_found")
        size = page_limit(limit)
        moment = parse_time(since, "since") if since else None
        after = None
        if cursor is not None:
            at, seq = decode_cursor(cursor, (str, int))
            after = (parse_time(str(at), "cursor"), int(seq))
        rows = await self.messages.deletions(channel_id, moment, size, after)
        if not rows and not await self.channels.exists(channel_id):
            raise NotFound("channel not found", code="channel_not_found")
        last = rows[-1] if rows else None
        return Page(rows, _next(rows, size, rfc3339(last.deleted_at), last.seq) if last else None)

    # ------------------------------------------------------------ bans

    async def ban(
        self,
        actor: Caller | None,
        *,
        user_id: str | None,
        address: str | None,
        expires_at: str | None,
        duration_seconds: int | None,
        comment: str,
        client: str | None = None,
    ) -> Ban:
        """``client``: the address the request came from (None from the command line)."""
        if (user_id is None) == (address is None):
            raise InvalidInput("give either user_id or address", code="invalid_ban")
        if expires_at is not None and duration_seconds is not None:
            raise InvalidInput("give expires_at or duration_seconds, not both", code="invalid_ban")
        if len(comment) > MAX_COMMENT:
            raise InvalidInput(f"comment exceeds {MAX_COMMENT} characters", code="invalid_ban")
        now = self.ctx.clock()
        until: datetime | None = None
        if expires_at is not None:
            until = parse_time(expires_at, "expires_at")
            if until <= now:
                raise InvalidInput("expires_at is in the past", code="invalid_ban")
        elif duration_seconds is not None:
            if duration_seconds < 1:
                raise InvalidInput("duration_seconds must be positive", code="invalid_ban")
            until = now + timedelta(seconds=duration_seconds)
        network = None
        if user_id is not None:
            await self.users.lock_admin_changes()
            target = await self._target(actor, user_id)
            if target.is_admin and await self.users.unlocked_admins() <= 1:
                raise Conflict("at least one unlocked admin must remain", code="last_admin")
        else:
            assert address is not None
            network = str(await self._ban_network(actor, address, client))
        ban = await self.bans.add(
            Ban(
                user_id=user_id,
                address=network,
                expires_at=until,
                comment=comment,
                created_by=actor_id(actor),
                created_at=now,
            )
        )
        self.uow.emit(ban_added(ban))
        if user_id is not None:
            await mark_rooms_of(self.uow, user_id)  # its devices hold the rooms' keys
        await self._log("ban", actor, user_id=user_id, address=network, message=f"ban {ban.id}")
        return ban

    async def _ban_network(self, actor: Caller | None, address: str, client: str | None) -> Network:
        """The network of an address ban, once it is known to lock out no staff.

        Only admins (and the operator) ban addresses: a moderator could otherwise ban
        an admin's address, which no rule about users would catch. Nobody bans wider
        than the minimum prefix. A bearer admin is also refused a network holding their
        own address or that of any admin's or moderator's socket open on this node; the
        operator is not (its token is never refused by a ban, and it undoes them).
        """
        if not is_admin(actor):
            raise Forbidden("only an admin may ban an address", code="not_admin")
        network = parse_ban_address(address)
        settings = self.ctx.settings
        ipv4 = network.version == 4
        widest = settings.ban_min_prefix_ipv4 if ipv4 else settings.ban_min_prefix_ipv6
        if network.prefixlen < widest:
            raise InvalidInput(
                f"an IPv{network.version} ban may not be wider than /{widest}",
                code="ban_too_wide",
            )
        if actor is not None:
            staff = [row[0] for row in await self.users.staff()]
            known = self.ctx.directory.addresses(staff)
            if client:
                known.add(client)
            for text in known:
                ip = parse_ip(text)
                if ip is not None and ip.version == network.version and ip in network:
                    raise Conflict(
                        "the network holds the address of an admin or moderator",
                        code="staff_address",
                    )
        return network

    async def unban(self, actor: Caller | None, ban_id: str) -> BanRule:
        ban = await self.bans.get(ban_id)
        if ban is None:
            raise NotFound("ban not found", code="ban_not_found")
        if ban.user_id is not None:
            await self._target(actor, ban.user_id)
        rule = ban_rule(ban)
        if not await self.bans.delete(ban_id):
            raise NotFound("ban not found", code="ban_not_found")
        self.uow.emit(BanRemoved(id=ban_id))
        await self._log(
            "unban", actor, user_id=ban.user_id, address=ban.address, message=f"ban {ban_id}"
        )
        return rule

    async def list_bans(
        self, limit: int | None, cursor: str | None, *, active: bool | None, user_id: str | None
    ) -> Page[Ban]:
        size = page_limit(limit)
        rows = await self.bans.page(
            size,
            _time_cursor(cursor),
            user_id=user_id,
            active_at=self.ctx.clock() if active else None,
        )
        last = rows[-1] if rows else None
        return Page(
            list(rows), _next(rows, size, rfc3339(last.created_at), last.id) if last else None
        )

    async def load_bans(self) -> list[BanRule]:
        return [ban_rule(ban) for ban in await self.bans.all()]

    # ------------------------------------------------------------ invites

    async def create_invite(
        self, actor: Caller | None, ttl_seconds: int | None, max_uses: int | None
    ) -> tuple[str, Invite]:
        live = self.ctx.live_settings
        ttl = self.ctx.settings.invite_ttl if ttl_seconds is None else ttl_seconds
        uses = live.invite_max_uses if max_uses is None else max_uses
        if ttl_seconds is not None and not 60 <= ttl <= 365 * 24 * 3600:
            raise InvalidInput("ttl_seconds must be between 60 and 31536000", code="invalid_invite")
        if max_uses is not None and not 1 <= uses <= 100_000:
            raise InvalidInput("max_uses must be between 1 and 100000", code="invalid_invite")
        token = tokens.new_token()
        now = self.ctx.clock()
        invite = await self.invites.add(
            Invite(
                token_hash=tokens.token_hash(token),
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
                max_uses=uses,
                uses=0,
            )
        )
        await self._log("invite_created", actor, message=f"invite {invite.id}")
        return token, invite

    async def list_invites(
        self, limit: int | None, cursor: str | None, state: str | None
    ) -> Page[Invite]:
        if state is not None and state not in INVITE_STATES:
            raise InvalidInput(
                "state must be active, consumed, expired or revoked", code="invalid_state"
            )
        size = page_limit(limit)
        rows = await self.invites.page(
            size, _time_cursor(cursor), state=state, now=self.ctx.clock()
        )
        last = rows[-1] if rows else None
        return Page(rows, _next(rows, size, rfc3339(last.created_at), last.id) if last else None)

    async def revoke_invite(self, actor: Caller | None, invite_id: str) -> None:
        if await self.invites.get_by_id(invite_id) is None:
            raise NotFound("invite not found", code="invite_not_found")
        if await self.invites.revoke(invite_id, self.ctx.clock()):
            await self._log("invite_revoked", actor, message=f"invite {invite_id}")

    # ------------------------------------------------------------ settings

    async def stored_settings(self) -> dict[str, Any]:
        return await self.settings.all()

    async def change_settings(
        self, actor: Caller | None, changes: dict[str, Any]
    ) -> dict[str, Value]:
        """Store a partial update; every node applies it when the event arrives."""
        checked = validate(changes)
        await self.settings.upsert(checked, self.ctx.clock())
        self.uow.emit(SettingsChanged(values=dict(checked)))
        live = {**self.ctx.live_settings.values, **checked}
        self.uow.emit(
            ServerInfoUpdated(
                server_title=str(live["server_title"]),
                welcome_message=str(live["welcome_message"]),
                registration_open=bool(live["registration_open"]),
                directory_key_commitment=self.ctx.directory_commitment,
            )
        )
        await self._log("settings", actor, message="changed " + ", ".join(sorted(checked)))
        return checked

    # ------------------------------------------------------------ announcements, log

    async def announce(self, actor: Caller | None, text: str, alert: bool) -> None:
        self.uow.emit(ServerAnnouncement(text=text, alert=alert, sent_at=rfc3339(self.ctx.clock())))
        await self._log("announcement", actor, message="alert" if alert else "message")

    async def read_log(
        self,
        limit: int | None,
        cursor: str | None,
        *,
        topic: str | None,
        user_id: str | None,
        after: str | None,
    ) -> Page[ServerLogEntry]:
        if topic is not None and topic not in TOPICS:
            raise InvalidInput("unknown log topic", code="invalid_topic")
        size = page_limit(limit)
        before = int(decode_cursor(cursor, (int,))[0]) if cursor is not None else None
        rows = await self.server_log.page(
            size,
            before,
            topic=topic,
            user_id=user_id,
            after=parse_time(after, "after") if after else None,
        )
        last = rows[-1] if rows else None
        return Page(list(rows), _next(rows, size, last.id) if last else None)
