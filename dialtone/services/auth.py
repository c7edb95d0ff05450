from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from dialtone.db.models import Device, Session, User
from dialtone.db.repositories.devices import DeviceRepository
from dialtone.db.repositories.invites import InviteRepository
from dialtone.db.repositories.sessions import SessionRepository
from dialtone.db.repositories.users import UserRepository
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.db.upsert import ReferenceGone
from dialtone.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthorized,
)
from dialtone.schemas.events import SessionsRevoked
from dialtone.security import tokens, usernames
from dialtone.security.addresses import limit_key
from dialtone.security.keys import is_public_key
from dialtone.security.passwords import check_password_strength
from dialtone.security.ratelimit import Decision, retry_after_seconds
from dialtone.services.context import LAST_SEEN_EVERY, Caller, ServerContext

log = logging.getLogger("dialtone.security")


@dataclass
class AuthResult:
    token: str
    user: User
    device: Device
    username: str
    expires_at: datetime


# Tokens a failed login takes from each of the account's login buckets.
FAILURE_COST = 2


def checked_username(raw: str) -> str:
    name = usernames.normalise(raw)
    problem = usernames.check_username(name)
    if problem:
        raise InvalidInput(problem, code="invalid_username")
    return name


def checked_public_key(raw: str) -> str:
    if not is_public_key(raw):
        raise InvalidInput(
            "public_key must be standard base64 of a 32-byte X25519 key", code="invalid_public_key"
        )
    return raw


async def rate_limit(ctx: ServerContext, policy: str, key: str, client: str | None = None) -> None:
    decision = await ctx.limiter.hit(policy, key)
    if not decision.allowed:
        refuse(ctx, policy, decision, client)


def refuse(ctx: ServerContext, policy: str, decision: Decision, client: str | None) -> NoReturn:
    ctx.server_log.record(
        "rate_limited", level="warning", address=client, message=f"policy {policy}"
    )
    raise RateLimited(
        "too many attempts, try again later", retry_after=retry_after_seconds(decision)
    )


async def register_device(
    ctx: ServerContext, devices: DeviceRepository, user_id: str, public_key: str, now: datetime
) -> Device:
    """The user's device for this key: the known one, or a new one within the user's cap
    and device rate limit. One statement, so simultaneous logins share one device."""
    try:
        outcome = await devices.register(
            user_id, public_key, now, ctx.settings.max_devices_per_user
        )
    except ReferenceGone:
        raise Unauthorized("invalid username or password", code="invalid_credentials") from None
    if outcome is None:
        raise Conflict(
            f"this account has {ctx.settings.max_devices_per_user} devices, the most allowed: "
            "revoke one (DELETE /devices/{id}) before adding another",
            code="device_limit",
        )
    device, created = outcome
    if created:
        # Charged only for a device that is really new; a refusal rolls the insert back.
        await rate_limit(ctx, "device", user_id)
    return device


def cached_caller(ctx: ServerContext, token: str) -> Caller | None:
    """The caller of ``token`` when answering needs no database at all: the session cache
    knows the token, the user is not banned and no last_seen_at write is due. None
    means "ask ``AuthService.authenticate``", which gives the same answer or the
    refusal (and writes last_seen_at when due)."""
    cache = ctx.session_cache
    if cache is None or not token or len(token) > 256:
        return None
    now = ctx.clock()
    caller = cache.get(tokens.token_hash(token), now)
    if caller is None or ctx.bans.user_ban(caller.user_id, now) is not None:
        return None
    last = ctx.seen.get(caller.device_id)
    if last is None or time.monotonic() - last >= LAST_SEEN_EVERY:
        return None
    return caller


class AuthService:
    def __init__(self, uow: UnitOfWork, ctx: ServerContext) -> None:
        self.uow = uow
        self.ctx = ctx
        self.users = UserRepository(uow.session)
        self.devices = DeviceRepository(uow.session)
        self.sessions = SessionRepository(uow.session)
        self.invites = InviteRepository(uow.session)

    async def _limit(self, policy: str, key: str, client: str | None = None) -> None:
        await rate_limit(self.ctx, policy, key, client)

    async def register(
        self,
        username: str,
        password: str,
        public_key: str,
        invite_token: str,
        *,
        client: str = "unknown",
    ) -> AuthResult:
        """Everything in one transaction: a failure leaves no user and an unspent invite.

        Registration redeems an invite, so its per-address limit also bounds invite guessing.
        """
        await self._limit("register", limit_key(client), client)
        if not self.ctx.live_settings.registration_open:
            raise Forbidden("registration is closed on this server", code="registration_closed")
        name = checked_username(username)
        problem = check_password_strength(password)
        if problem:
            raise InvalidInput(problem, code="weak_password")
        checked_public_key(public_key)
        if not invite_token.strip():
            raise InvalidInput("invite_token is required", code="invalid_invite")

        now = self.ctx.clock()
        invite_hash = tokens.token_hash(invite_token.strip())
        invite = await self.invites.get(invite_hash)
        if invite is None:
            raise NotFound("unknown invite", code="invite_not_found")
        spent = invite.uses >= invite.max_uses or invite.revoked_at is not None
        if spent or invite.expires_at <= now:
            raise Gone("invite expired or already used", code="invite_gone")

        name_hash = usernames.username_hash(self.ctx.settings.username_pepper, name)
        if await self.users.get_by_username_hash(name_hash) is not None:
            raise Conflict("username is taken", code="username_taken")

        # Nothing written yet: no pooled connection waits on the hash. The writes below
        # re-check what matters (the invite is consumed conditionally, names are unique).
        await self.uow.release_connection()
        password_hash = await self.ctx.hashing.run(self.ctx.passwords.hash, password)
        await self.users.lock_registrations()
        user = await self.users.add(
            User(
                username_hash=name_hash,
                password_hash=password_hash,
                is_admin=False,
                is_trusted=True,
                created_at=now,
            )
        )
        # Decided after our insert, under the registration lock: two concurrent first
        # registrations cannot both see an empty table. Reserved names do not count.
        if not await self.users.others_registered(user.id):
            user.is_admin = True
        if not await self.invites.consume(invite_hash, user.id, now):
            # Spent by a concurrent registration between our read and this update.
            raise Gone("invite expired or already used", code="invite_gone")
        device = await self.devices.add(
            Device(user_id=user.id, public_key=public_key, created_at=now, last_seen_at=now)
        )
        await self.ctx.server_log.add(
            self.uow.session, "register", user_id=user.id, device_id=device.id, address=client
        )
        return await self._start_session(user, device, name, now)

    async def login(
        self, username: str, password: str, public_key: str, *, client: str = "unknown"
    ) -> AuthResult:
        name = usernames.normalise(username)
        # Keyed on the peppered hash: the limiter's store never sees a username.
        name_hash = usernames.username_hash(self.ctx.settings.username_pepper, name)
        # Every attempt spends its address's bucket, so one place cannot spray accounts.
        # The account's buckets, per (account, address) and from every address together,
        # count failures only: a right password costs them nothing, so failures by
        # others can hold the account's ceiling empty but cannot make the owner's
        # right password the one that is refused (see docs/SECURITY.md).
        where = limit_key(client)
        limiter = self.ctx.limiter
        await self._limit("login_address", where, client)
        here = await limiter.peek("login_user", f"{name_hash}|{where}")
        if not here.allowed:
            refuse(self.ctx, "login_user", here, client)
        total = await limiter.peek("login_user_total", name_hash)
        besieged: Decision | None = None
        if not total.allowed:
            # Failures from many addresses spent the ceiling. Only an address with no
            # recent failure against this account may still try: a right password
            # passes, a wrong one is refused like every other attempt (429).
            if here.remaining < limiter.capacity("login_user"):
                refuse(self.ctx, "login_user_total", total, client)
            besieged = total
        if usernames.check_username(name):
            # Same answer as a wrong password: do not reveal which names are valid.
            await self.ctx.hashing.run(self.ctx.passwords.verify, None, password)
            await self._login_failed(client, name_hash, None, besieged)
        checked_public_key(public_key)
        user = await self.users.get_by_username_hash(name_hash)
        stored = user.password_hash if user is not None else None
        # Nothing written yet: a login storm must not hold pooled connections (which
        # every other request and the message writer need) while argon2 runs.
        await self.uow.release_connection()
        ok = await self.ctx.hashing.run(self.ctx.passwords.verify, stored, password)
        if user is None or stored is None or not ok:
            await self._login_failed(client, name_hash, user, besieged)

        now = self.ctx.clock()
        # Told only to whoever knows the password: a refusal reveals nothing to guessers.
        if user.is_locked:
            self.ctx.server_log.record(
                "login_failed", user_id=user.id, address=client, message="account locked"
            )
            raise Forbidden("this account is locked", code="account_locked")
        if self.ctx.bans.user_ban(user.id, now) is not None:
            self.ctx.server_log.record(
                "login_failed", user_id=user.id, address=client, message="user banned"
            )
            raise Forbidden("banned from this server", code="banned")
        if self.ctx.passwords.needs_rehash(stored):
            user.password_hash = await self.ctx.hashing.run(self.ctx.passwords.hash, password)
        device = await register_device(self.ctx, self.devices, user.id, public_key, now)
        await self.ctx.server_log.add(
            self.uow.session, "login", user_id=user.id, device_id=device.id, address=client
        )
        return await self._start_session(user, device, name, now)

    async def _login_failed(
        self, client: str, name_hash: str, user: User | None, besieged: Decision | None
    ) -> NoReturn:
        # A failure costs two tokens of each bucket (the address's paid one already), so
        # guessing drains them twice as fast as the refill: three guesses, then 429.
        where = limit_key(client)
        await self.ctx.limiter.charge("login_address", where, 1)
        await self.ctx.limiter.charge("login_user", f"{name_hash}|{where}", FAILURE_COST)
        await self.ctx.limiter.charge("login_user_total", name_hash, FAILURE_COST)
        log.info(
            "login failed",
            extra={"event": "login_failed", "user_id": user.id if user else None, "client": client},
        )
        self.ctx.server_log.record(
            "login_failed", user_id=user.id if user else None, address=client
        )
        if besieged is not None:
            refuse(self.ctx, "login_user_total", besieged, client)
        raise Unauthorized("invalid username or password", code="invalid_credentials")

    async def _start_session(
        self, user: User, device: Device, name: str, now: datetime
    ) -> AuthResult:
        token = tokens.new_token()
        expires_at = now + timedelta(seconds=self.ctx.settings.session_ttl)
        # Register and login have just written the device's last_seen_at: the new token's
        # first requests (typically its WebSocket handshake) need not write it again.
        self.ctx.seen[device.id] = time.monotonic()
        await self.sessions.add(
            Session(
                token_hash=tokens.token_hash(token),
                user_id=user.id,
                device_id=device.id,
                created_at=now,
                expires_at=expires_at,
            )
        )
        return AuthResult(
            token=token, user=user, device=device, username=name, expires_at=expires_at
        )

    async def authenticate(self, token: str) -> Caller | None:
        if not token or len(token) > 256:
            return None
        digest = tokens.token_hash(token)
        now = self.ctx.clock()
        cache = self.ctx.session_cache
        if cache is not None:
            cached = cache.get(digest, now)
            if cached is not None:
                self.ctx.bans.check_user(cached.user_id, now)
                await self._seen(cached.device_id)
                return cached
            epoch = cache.epoch  # before the query: a revocation meanwhile voids the answer
        found = await self.sessions.resolve(digest, now)
        if found is None:
            return None
        session, user = found
        if user.is_locked:
            return None
        self.ctx.bans.check_user(user.id, now)
        await self._seen(session.device_id)
        caller = Caller(
            user_id=user.id,
            device_id=session.device_id,
            is_admin=user.is_admin,
            is_trusted=user.is_trusted,
            token_hash=digest,
            expires_at=session.expires_at,
            is_moderator=user.is_moderator,
        )
        if cache is not None:
            cache.put(digest, caller, session.expires_at, epoch)
        return caller

    async def _seen(self, device_id: str) -> None:
        """Record activity, writing last_seen_at at most once a minute per device (per node)."""
        now = time.monotonic()
        last = self.ctx.seen.get(device_id)
        if last is not None and now - last < LAST_SEEN_EVERY:
            return
        self.ctx.seen[device_id] = now
        await self.devices.touch(device_id, self.ctx.clock())

    async def logout(self, caller: Caller, *, everywhere: bool = False) -> None:
        self.ctx.sessions_changing(self.uow)
        if everywhere:
            await self.sessions.delete_for_user(caller.user_id)
            self.uow.emit(SessionsRevoked(user_id=caller.user_id))
        else:
            await self.sessions.delete(caller.token_hash)
            self.uow.emit(SessionsRevoked(user_id=caller.user_id, token_hash=caller.token_hash))
        log.info(
            "logged out",
            extra={
                "event": "sessions_revoked",
                "user_id": caller.user_id,
                "device_id": caller.device_id,
                "everywhere": everywhere,
            },
        )
