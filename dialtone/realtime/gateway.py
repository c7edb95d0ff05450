"""``/ws``: handshake auth, decode a frame, dispatch it, one short transaction per frame.

The handler is a plain ASGI endpoint so the handshake can be refused with a real HTTP
401 (the ASGI WebSocket denial-response extension) before the upgrade. No database
session lives as long as the socket: the token is resolved in one short transaction,
and each frame that needs the database gets its own. Once accepted, a socket served by
Dialtone's WebSocket protocol (dialtone.realtime.wsserver) gets its events as prebuilt
frames written by the hub; the handshake itself stays plain ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from litestar import asgi
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone.config import Settings
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.errors import DialtoneError, error_body
from dialtone.realtime.hub import CLOSE_POLICY, DRAIN_TIMEOUT, Connection, FrameSink, Hub
from dialtone.realtime.limits import USER_CAP, FrameLimits, UserChatBuckets, make_slots
from dialtone.realtime.writer import MessageNotStored, MessageWriter
from dialtone.realtime.wsserver import FRAMES_EXTENSION
from dialtone.schemas.common import MAX_BODY_BYTES
from dialtone.schemas.events import (
    CLIENT_FRAME_TYPES,
    ChannelMessageSend,
    ErrorEvent,
    IceCandidate,
    IceCandidateOut,
    ServerHello,
    VoiceJoin,
    VoiceLeave,
    VoiceMembership,
    VoiceRelay,
    WebrtcAnswer,
    WebrtcAnswerOut,
    WebrtcOffer,
    WebrtcOfferOut,
    encode_event,
    frame_decoder,
)
from dialtone.security.addresses import limit_key
from dialtone.security.headers import bearer_token, header, scope_address
from dialtone.services.auth import AuthService
from dialtone.services.blocks import BlockService
from dialtone.services.channels import ChannelService
from dialtone.services.context import Caller, ServerContext
from dialtone.services.messages import NewMessage, channel_not_found

# The scope key under which the server's own ASGI ``send`` reaches the gateway (set by
# dialtone.api.edge.DialtoneApp, the application uvicorn calls). Litestar hands its
# routes a ``send`` that runs every ``before_send`` hook on every message; those hooks
# only touch response starts, so the events of an accepted socket go out through the
# server's ``send`` directly: two coroutines less per delivery. The handshake (accept
# or refusal) still goes through Litestar's, hooks and all.
FRAME_SEND = "dialtone.frame_send"

log = logging.getLogger("dialtone.realtime")

SUBPROTOCOL_PREFIX = "dialtone.bearer."

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class FrameError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def handshake_token(scope: Scope) -> tuple[str | None, str | None]:
    """The bearer token, and the subprotocol to echo when it came that way."""
    token = bearer_token(header(scope, b"authorization"))
    if token is not None:
        return token, None
    for offered in scope.get("subprotocols") or ():
        if offered.startswith(SUBPROTOCOL_PREFIX) and len(offered) > len(SUBPROTOCOL_PREFIX):
            return offered[len(SUBPROTOCOL_PREFIX) :], offered
    return None, None


def classify_decode_error(raw: str | bytes, exc: msgspec.DecodeError) -> FrameError:
    if not isinstance(exc, msgspec.ValidationError):
        return FrameError("invalid_message", "frame is not valid JSON")
    try:
        loose = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return FrameError("invalid_message", "frame is not valid JSON")
    if not isinstance(loose, dict):
        return FrameError("invalid_message", "frame must be a JSON object")
    kind = loose.get("type")
    if not isinstance(kind, str):
        return FrameError("invalid_message", "frame needs a string `type`")
    if kind not in CLIENT_FRAME_TYPES:
        return FrameError("unsupported_type", "unsupported message type")
    return FrameError("invalid_message", f"invalid {kind}: {exc}")


class Gateway:
    def __init__(self, ctx: ServerContext, hub: Hub, state: Any) -> None:
        self.ctx = ctx
        self.settings: Settings = ctx.settings
        self.hub = hub
        self._state = state
        # The clock of the per-socket frame buckets (tests move their own).
        self.frame_clock: Callable[[], float] = time.monotonic
        # Only a cluster (shared broker) on PostgreSQL needs a lock that spans nodes.
        self.writer = MessageWriter(
            self.unit_of_work,
            ctx,
            cluster_locks=bool(self.settings.redis_url) and not self.settings.is_sqlite,
        )
        # Chat budgets per user, on the same clock as the per-socket buckets; with
        # Redis, the rate limiter's shared bucket instead, so that every worker and
        # node draws on the same budget.
        self.user_chat = UserChatBuckets(self.settings, lambda: self.frame_clock())
        self.shared_user_chat = bool(self.settings.redis_url)
        # Open sockets per user and per address, over every process (see limits.py).
        self.slots = make_slots(self.settings)
        self._bad_data: set[str] = set()  # sockets whose bad frames were logged already

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        maker: async_sessionmaker[AsyncSession] = self._state.sessionmaker
        return maker

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker, self.hub.publish, self.ctx.database_failed)

    async def stop(self, grace: float) -> None:
        """Graceful stop (SIGTERM): no new frame is handled, the messages already taken
        are stored and acknowledged (their events are delivered on this node before the
        writer returns), and only then is every socket closed with 1001, after what was
        queued to it. A frame that arrives meanwhile gets no answer: its client resends
        it after reconnecting (with a ``client_message_id``, safely)."""
        self.hub.shutting_down = True
        await self.writer.close(grace=grace)
        await self.hub.shutdown(grace=grace)

    # ------------------------------------------------------------ handshake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await _http_error(send, 426, "use a WebSocket upgrade on /ws", "upgrade_required")
            return
        if (await receive())["type"] != "websocket.connect":
            return
        token, subprotocol = handshake_token(scope)
        if self.hub.shutting_down:
            await _deny(scope, send, 503, "server is shutting down", "unavailable")
            return
        address = scope_address(scope, self.ctx.trusted_proxies)
        if self.ctx.bans.address_ban(address, self.ctx.clock()) is not None:
            await _deny(scope, send, 403, "banned from this server", "banned")
            return
        caller: Caller | None = None
        if token is not None:
            try:
                caller = await self._authenticate(token)
            except DialtoneError as exc:  # a banned user: a clear 403 with its code
                await _deny(scope, send, exc.status, exc.message, exc.code)
                return
            except Exception as exc:
                log.error("websocket handshake: session lookup failed: %s", type(exc).__name__)
                await _deny(scope, send, 503, "database unavailable, try again", "unavailable")
                return
        if caller is None:
            await _deny(scope, send, 401, "missing or invalid bearer token", "unauthorized")
            return
        del token  # nothing of the handshake outlives it in this frame but what is used
        refused, slot = await self._take_slot(scope, send, caller, address)
        if refused:
            return
        held = False
        try:
            try:
                # Whom this user blocked (the hub's delivery filter), known before the
                # socket is accepted and can get its first event.
                await self.hub.blocks.hold(caller.user_id, self._blocked_ids)
                held = True
            except Exception as exc:
                log.error("websocket handshake: blocks lookup failed: %s", type(exc).__name__)
                await _deny(scope, send, 503, "database unavailable, try again", "unavailable")
                return
            await send(
                {"type": "websocket.accept", "subprotocol": subprotocol}
                if subprotocol is not None
                else {"type": "websocket.accept"}
            )
            # Dialtone's WebSocket protocol (dialtone.realtime.wsserver) lets the hub
            # write prebuilt frames to the socket directly; under another server,
            # events go through ASGI ``send``.
            sink = (scope.get("extensions") or {}).get(FRAMES_EXTENSION)
            await self.run(
                caller, receive, scope.get(FRAME_SEND, send), caller.expires_at, address, sink
            )
        finally:
            if held:
                self.hub.blocks.release(caller.user_id)
            if slot is not None:
                await self.slots.release(slot, caller.user_id, limit_key(address))

    async def _take_slot(
        self, scope: Scope, send: Send, caller: Caller, address: str
    ) -> tuple[bool, str | None]:
        """(refused, slot): the socket's slot under the per-user and per-address caps
        (None with the rate limits off), or refused once the handshake was answered 429."""
        settings = self.ctx.settings  # live: the per-address cap is a live setting
        if not settings.rate_limits:
            return False, None
        slot = f"{self.hub.node_id}.{secrets.token_hex(8)}"
        refused = await self.slots.acquire(
            slot,
            caller.user_id,
            limit_key(address),
            settings.max_sockets_per_user,
            settings.max_connections_per_address,
        )
        if refused is None:
            return False, slot
        per_user = refused == USER_CAP
        log.warning(
            "socket cap hit",
            extra={
                "event": "rate_limited",
                "policy": "sockets_per_user" if per_user else "connections",
                "user_id": caller.user_id,
                "client": address,
            },
        )
        message = (
            "too many open sockets for this account"
            if per_user
            else "too many concurrent connections"
        )
        await _deny(scope, send, 429, message, "rate_limited")
        return True, None

    async def _blocked_ids(self, user_id: str) -> set[str]:
        async with self.unit_of_work() as uow:
            return await BlockService(uow, self.ctx).blocked_ids(user_id)

    async def _authenticate(self, token: str) -> Caller | None:
        # A method of its own: the unit of work is not kept alive by the frame of
        # ``__call__``, which lasts as long as the socket.
        async with self.unit_of_work() as uow:
            return await AuthService(uow, self.ctx).authenticate(token)

    # ------------------------------------------------------------ one socket's life

    async def run(
        self,
        caller: Caller,
        receive: Receive,
        send: Send,
        expires_at: datetime | None = None,
        address: str = "",
        sink: FrameSink | None = None,
    ) -> None:
        task = asyncio.current_task()
        dropped = False
        drop: Callable[[], None] | None = None
        if sink is None:

            def drop() -> None:
                # The hub gave up on a socket that does not drain: end this task. (With
                # a sink the hub aborts the connection instead: the loop below then
                # sees a disconnect.)
                nonlocal dropped
                dropped = True
                if task is not None:
                    task.cancel()

        conn = Connection(
            caller,
            send,
            self.settings.ws_send_queue,
            self.hub.node_id,
            abort=drop,
            sink=sink,
            outbox=self.hub.outbox,
        )
        conn.address = address
        expiry: asyncio.TimerHandle | None = None
        if expires_at is not None:
            # The session ends while the socket is open: close it then, as a logout would.
            delay = (expires_at - self.ctx.clock()).total_seconds()
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, delay), conn.close, CLOSE_POLICY, "session_expired"
            )
        # ctx.settings, not self.settings: the limits are live settings.
        settings = self.ctx.settings
        limits = (
            FrameLimits.from_settings(
                settings,
                self.frame_clock,
                user_chat=None if self.shared_user_chat else self.user_chat.of(caller.user_id),
            )
            if settings.rate_limits
            else None
        )
        live = self.ctx.live_settings
        hello = ServerHello(
            user_id=caller.user_id,
            device_id=caller.device_id,
            is_admin=caller.is_admin,
            is_moderator=caller.is_moderator,
            is_trusted=caller.is_trusted,
            server_title=live.server_title,
            welcome_message=live.welcome_message,
        )
        self.ctx.server_log.record(
            "join", user_id=caller.user_id, device_id=caller.device_id, address=address
        )
        try:
            await self.hub.attach(conn, encode_event(hello))
            while True:
                # No task and no asyncio.wait per frame. A socket the server closes (slow
                # consumer, revoked, shutdown) stops here when its close frame has been
                # written (uvicorn then reports a disconnect), or when the connection's
                # drain timeout gives up on it (drop).
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if conn.closing is not None or self.hub.shutting_down:
                    # Closing, draining or stopping: frames still in flight are not
                    # handled (a client resends what was not acknowledged).
                    continue
                await self.handle(conn, message, limits)
        except asyncio.CancelledError:
            if not dropped or task is None:
                raise
            task.uncancel()
        finally:
            if expiry is not None:
                expiry.cancel()
            self._bad_data.discard(conn.id)
            self.ctx.server_log.record(
                "leave",
                user_id=caller.user_id,
                device_id=caller.device_id,
                message=conn.closing[1] if conn.closing else "",
            )
            await self.hub.detach(conn)
            if conn.closing is not None and conn.writing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.drained(), DRAIN_TIMEOUT)

    # ------------------------------------------------------------ frames

    async def handle(
        self, conn: Connection, message: dict[str, Any], limits: FrameLimits | None
    ) -> None:
        text = message.get("text")
        if text is None:
            # Refused frames of every kind count against the limits, binary ones included.
            if limits is not None and not self._allowed(conn, limits, chat=False):
                return
            self._error(conn, "invalid_message", "binary frames are not supported; send JSON text")
            return
        try:
            frame = frame_decoder.decode(text)
        except msgspec.DecodeError as exc:
            frame_error = classify_decode_error(text, exc)
            if conn.id not in self._bad_data:
                # Once per socket: a client sending garbage must not flood the log.
                self._bad_data.add(conn.id)
                self.ctx.server_log.record(
                    "bad_data",
                    level="warning",
                    user_id=conn.user_id,
                    device_id=conn.device_id,
                    message=frame_error.code,
                )
            if limits is not None and not self._allowed(conn, limits, chat=False):
                return
            self._error(conn, frame_error.code, frame_error.message)
            return
        if limits is not None:
            chat = isinstance(frame, ChannelMessageSend)
            if not self._allowed(conn, limits, chat=chat):
                return
            if chat and self.shared_user_chat and not await self._user_chat(conn, limits):
                return
        try:
            await self.dispatch(conn, frame)
        except FrameError as exc:
            self._error(conn, exc.code, exc.message)
        except MessageNotStored:
            # Logged once for its whole batch by the writer.
            self._error(conn, "server_error", "the message was not stored; send it again")
        except DialtoneError as exc:
            self._error(conn, exc.code, exc.message)
        except Exception as exc:
            # Type only: a database error's text can carry the statement's parameters,
            # i.e. message bodies, which never go to the log.
            log.error("websocket frame failed conn=%s: %s", conn.id, type(exc).__name__)
            self._error(conn, "server_error", "the server could not handle this message")

    def _allowed(self, conn: Connection, limits: FrameLimits, *, chat: bool) -> bool:
        if limits.allow_chat() if chat else limits.signal.hit().allowed:
            limits.limited = False
            return True
        return self._refused(conn, limits, "ws_chat" if chat else "ws_signal")

    async def _user_chat(self, conn: Connection, limits: FrameLimits) -> bool:
        """The user's chat budget shared by every worker and node (through Redis)."""
        if (await self.ctx.limiter.hit("ws_user_chat", conn.user_id)).allowed:
            return True
        return self._refused(conn, limits, "ws_chat")

    def _refused(self, conn: Connection, limits: FrameLimits, policy: str) -> bool:
        self.hub.metrics.rate_limited(policy)
        if not limits.flood.hit().allowed:
            log.warning(
                "closing flooding socket conn=%s",
                conn.id,
                extra={**self._who(conn), "event": "rate_limited", "policy": "ws_flood"},
            )
            conn.close(CLOSE_POLICY, "rate_limited")
            return False
        if not limits.limited:
            # One line when a socket goes over its limit, not one per refused frame.
            limits.limited = True
            self.ctx.server_log.record(
                "rate_limited",
                level="warning",
                user_id=conn.user_id,
                device_id=conn.device_id,
                message=f"policy {policy}",
            )
            log.info(
                "websocket rate limit hit conn=%s",
                conn.id,
                extra={**self._who(conn), "event": "rate_limited", "policy": policy},
            )
        self._error(conn, "rate_limited", "too many messages, slow down")
        return False

    @staticmethod
    def _who(conn: Connection) -> dict[str, str]:
        return {"user_id": conn.user_id, "device_id": conn.device_id}

    @staticmethod
    def _error(conn: Connection, code: str, message: str) -> None:
        conn.push(encode_event(ErrorEvent(code=code, message=message)))

    async def dispatch(self, conn: Connection, frame: object) -> None:
        match frame:
            case ChannelMessageSend():
                await self.send_message(conn, frame)
            case VoiceJoin(channel_id=channel_id):
                await self.voice_join(conn, channel_id)
            case VoiceLeave(channel_id=channel_id):
                if conn.voice_room != channel_id:
                    raise FrameError("voice_not_joined", "you are not in this voice room")
                await self.voice_leave(conn)
            case WebrtcOffer() | WebrtcAnswer() | IceCandidate():
                await self.relay(conn, frame)

    async def send_message(self, conn: Connection, frame: ChannelMessageSend) -> None:
        if len(frame.body.encode("utf-8")) > MAX_BODY_BYTES:
            raise FrameError("invalid_message", f"body exceeds {MAX_BODY_BYTES} bytes")
        # Stored with the other messages that arrived meanwhile, in one commit; returns
        # once the row is committed and its event (the sender's acknowledgement) is out.
        stored = await self.writer.submit(
            NewMessage(
                conn.caller,
                frame.channel_id,
                frame.body,
                frame.sender_name_enc,
                frame.client_message_id,
                frame.key_version,
                tuple(frame.attachments or ()),
            )
        )
        if stored is not None:
            # A retry of a send already stored: its acknowledgement again, to this socket.
            conn.push(encode_event(stored))

    async def voice_join(self, conn: Connection, channel_id: str) -> None:
        async with self.unit_of_work() as uow:
            await ChannelService(uow, self.ctx).require(channel_id, conn.user_id)
        if not self.hub.rooms.may_see(channel_id, conn.user_id):
            raise channel_not_found()  # removed meanwhile
        if conn.voice_room == channel_id:
            return
        if conn.voice_room is not None:
            await self.voice_leave(conn)
        conn.voice_room = channel_id
        await self.hub.publish(
            [
                VoiceMembership(
                    channel_id=channel_id, user_id=conn.user_id, conn_id=conn.id, joined=True
                )
            ]
        )

    async def voice_leave(self, conn: Connection) -> None:
        room, conn.voice_room = conn.voice_room, None
        if room is None:
            return
        await self.hub.publish(
            [VoiceMembership(channel_id=room, user_id=conn.user_id, conn_id=conn.id, joined=False)]
        )

    async def relay(
        self, conn: Connection, frame: WebrtcOffer | WebrtcAnswer | IceCandidate
    ) -> None:
        if conn.voice_room != frame.channel_id or not self.hub.rooms.may_see(
            frame.channel_id, conn.user_id
        ):
            raise FrameError("voice_not_joined", "join the voice room before signalling in it")
        payload: WebrtcOfferOut | WebrtcAnswerOut | IceCandidateOut
        match frame:
            case WebrtcOffer():
                payload = WebrtcOfferOut(
                    channel_id=frame.channel_id,
                    sender=conn.user_id,
                    recipient=frame.recipient,
                    sdp=frame.sdp,
                )
            case WebrtcAnswer():
                payload = WebrtcAnswerOut(
                    channel_id=frame.channel_id,
                    sender=conn.user_id,
                    recipient=frame.recipient,
                    sdp=frame.sdp,
                )
            case IceCandidate():
                payload = IceCandidateOut(
                    channel_id=frame.channel_id,
                    sender=conn.user_id,
                    recipient=frame.recipient,
                    candidate=frame.candidate,
                )
        await self.hub.publish([VoiceRelay(origin_conn_id=conn.id, payload=payload)])


async def _respond(
    send: Send, prefix: str, status: int, message: str, code: str, *extra: tuple[bytes, bytes]
) -> None:
    body = error_body(message, code)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *extra,
    ]
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


async def _http_error(send: Send, status: int, message: str, code: str) -> None:
    await _respond(send, "http", status, message, code)


async def _deny(scope: Scope, send: Send, status: int, message: str, code: str) -> None:
    """Refuse the handshake with a real HTTP response, before any upgrade."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        # A server without the denial-response extension can only say 403.
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
    if status == 429:
        extra.append((b"retry-after", b"1"))
    await _respond(send, "websocket.http", status, message, code, *extra)


@asgi("/ws", is_mount=False, copy_scope=False)
async def ws_endpoint(scope: Any, receive: Any, send: Any) -> None:
    gateway: Gateway = scope["litestar_app"].state.gateway
    await gateway(scope, receive, send)
