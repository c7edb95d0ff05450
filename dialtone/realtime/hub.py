"""Who is connected on this node, and delivery of events to their sockets.

Every event reaches the hub through the broker (so every node sees the same stream).
A fan-out event is encoded once, and its server frame built once: under Dialtone's
own WebSocket protocol (dialtone.realtime.wsserver, the scope extension
``dialtone.frames``) each socket appends that frame to its own small buffer, and the
buffers of every socket that got something are written once per loop turn, one
``transport.write`` per socket however many events it got in that turn. Without the
extension (the app run by another server, some tests) events go through the
socket's ASGI ``send``. Either way each socket's backlog is bounded: a socket that
cannot keep up is closed with 1013 ``slow_consumer`` after what was already queued
has been written, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import types
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Generator,
    Iterable,
    Sequence,
)
from typing import Any, Protocol, cast

from dialtone.metrics import NO_METRICS, Metrics
from dialtone.realtime.blocks import BlockIndex
from dialtone.realtime.rooms import PrivateRooms
from dialtone.realtime.voice import VoiceRooms
from dialtone.realtime.wsserver import text_frame
from dialtone.schemas.events import (
    INTERNAL_EVENTS,
    AdminControl,
    BlockChanged,
    ChannelCreated,
    ChannelDeleted,
    ChannelMemberAdded,
    ChannelMemberRemoved,
    ChannelMessageDeleted,
    ChannelMessageNew,
    ChannelRekeyRequired,
    ChannelUpdated,
    DeviceJoined,
    DeviceRevoked,
    Event,
    NodeAlive,
    NodeState,
    NodeStateRequest,
    PresenceUpdated,
    SessionsRevoked,
    SocketClosed,
    SocketOpened,
    VoiceMembership,
    VoicePresenceSnapshot,
    VoiceRelay,
    encode_event,
)
from dialtone.services.context import Caller, OnlineDirectory

log = logging.getLogger("dialtone.realtime")

CLOSE_GOING_AWAY = 1001
CLOSE_SERVICE_RESTART = 1012  # drain: reconnect, the load balancer picks another node
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013

# How long a closing socket may take to write what was queued before it is dropped.
DRAIN_TIMEOUT = 10.0

HEARTBEAT_SECONDS = 5.0
NODE_EXPIRY_BEATS = 3

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class FrameSink(Protocol):
    """What the hub needs of a socket to write frames to it directly
    (dialtone.realtime.wsserver.WebSocketProtocol, the ``dialtone.frames`` extension)."""

    closed: bool  # a close frame went out, or the peer is gone: nothing more is written
    writable: bool  # the transport is not paused
    on_writable: Callable[[], None] | None  # called on resume, and when the peer is gone

    def write_frames(self, data: bytes) -> None: ...

    def send_close(self, code: int, reason: str = "") -> None: ...

    def abort(self) -> None: ...


class Outbox:
    """The sockets with frames waiting: written together once per loop turn."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: list[Connection] = []

    def add(self, conn: Connection) -> None:
        if not self._due:
            asyncio.get_running_loop().call_soon(self.flush)
        self._due.append(conn)

    def flush(self) -> None:
        due, self._due = self._due, []
        for conn in due:
            conn.flush()


class Connection:
    """One open socket: who it belongs to, its bounded backlog, and its voice room.

    With a ``FrameSink`` (Dialtone's protocol) an event's prebuilt frame is appended
    to ``_frames`` and the socket is handed to the hub's ``Outbox``, which writes every
    socket's frames once per loop turn; a socket whose transport is paused keeps its
    frames until the transport asks for more (``on_writable``). The backlog (frames not
    yet handed to the transport, which itself takes no more once paused) is bounded by
    ``queue_limit`` events. No task and no queue object per socket.

    Without one, events are sent through the ASGI ``send`` of the socket, in order. An
    event for a socket with nothing in flight is sent at once, inside ``push``: its
    ``send`` is stepped by hand and, as long as the transport is not paused, finishes
    without waiting (no task at all). Only when it has to wait does a writer task take
    over: it finishes that ``send``, then writes whatever was queued meanwhile, and
    ends once the queue is empty; an idle socket owns no task of its own.
    """

    __slots__ = (
        "_abort",
        "_close_written",
        "_frames",
        "_give_up",
        "_limit",
        "_outbox",
        "_queue",
        "_send",
        "_sink",
        "_waiters",
        "_writer",
        "address",
        "caller",
        "closing",
        "device_id",
        "id",
        "opened_at",
        "token_hash",
        "user_id",
        "voice_room",
    )

    def __init__(
        self,
        caller: Caller,
        send: ASGISend,
        queue_limit: int,
        node_id: str = "local",
        abort: Callable[[], None] | None = None,
        sink: FrameSink | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        # "<node>.<random>": other nodes can forget a dead node's sockets by prefix.
        self.id = f"{node_id}.{secrets.token_hex(8)}"
        self.user_id = caller.user_id
        self.device_id = caller.device_id
        self.token_hash = caller.token_hash
        self.caller = caller
        self.address = ""  # the client's address, for address bans (set by the gateway)
        self.opened_at = time.time()  # wall clock: compared with other nodes' (catch-up)
        self.voice_room: str | None = None
        self.closing: tuple[int, str] | None = None
        self._send = send
        # Ends the socket's ASGI task (the gateway's): for a socket that cannot drain.
        self._abort = abort
        self._queue: deque[str] | None = None  # made when first needed
        self._limit = queue_limit
        self._writer: asyncio.Task[None] | None = None
        self._give_up: asyncio.TimerHandle | None = None
        # The direct path: frames waiting for the next flush, and who flushes them.
        self._sink = sink
        self._outbox = outbox if outbox is not None else Outbox()
        # None, one frame, or several (a list) waiting for the next flush.
        self._frames: bytes | list[bytes] | None = None
        self._close_written = False
        self._waiters: list[asyncio.Future[None]] | None = None
        if sink is not None:
            sink.on_writable = self.flush

    def push(self, text: str, frame: bytes | None = None) -> None:
        """Queue one encoded event (``frame``: its server frame, when already built)."""
        if self.closing is not None:
            return
        sink = self._sink
        if sink is None:
            self._push_asgi(text)
            return
        frames = self._frames
        if frames is None:
            # The usual case: one frame for this socket in this loop turn (no list).
            self._frames = text_frame(text) if frame is None else frame
            if sink.writable:
                self._outbox.add(self)
            return
        if frames.__class__ is bytes:
            frames = self._frames = [frames]
        frames = cast(list[bytes], frames)
        if len(frames) >= self._limit:
            log.info("closing slow consumer conn=%s user=%s", self.id, self.user_id)
            self.close(CLOSE_TRY_AGAIN, "slow_consumer")
            return
        frames.append(text_frame(text) if frame is None else frame)

    def flush(self) -> None:
        """Write the waiting frames in one write, then the close frame when closing.
        Called by the outbox once per loop turn, and by the sink when a paused transport
        can take more or the peer is gone."""
        sink = self._sink
        if sink is None:
            return
        frames = self._frames
        if frames is not None and sink.writable and not sink.closed:
            self._frames = None
            sink.write_frames(
                frames if frames.__class__ is bytes else b"".join(cast(list[bytes], frames))
            )
            if self.closing is None:
                return
        if sink.closed and not self._close_written:
            self._gone()
            return
        if self._frames is not None or not sink.writable:
            return  # the sink calls again when the transport can take more
        if self.closing is not None and not self._close_written:
            self._close_written = True
            code, reason = self.closing
            sink.send_close(code, reason)
            self._done()

    def _done(self) -> None:
        """Nothing more will be written: stop the drain timer, wake who waits for it."""
        if self._give_up is not None:
            self._give_up.cancel()
            self._give_up = None
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _push_asgi(self, text: str) -> None:
        queue = self._queue
        if self._writer is None and not queue:
            self._send_now(text)
            return
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self._limit:
            log.info("closing slow consumer conn=%s user=%s", self.id, self.user_id)
            self.close(CLOSE_TRY_AGAIN, "slow_consumer")
            return
        queue.append(text)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._run_writer())

    def _send_now(self, text: str) -> None:
        """Send one event to a socket with nothing in flight, without a task if it need
        not wait; if it must (the transport is paused), a writer task finishes it."""
        step = self._send({"type": "websocket.send", "text": text})
        if not isinstance(step, types.CoroutineType):  # any other awaitable: a task awaits it
            self._writer = asyncio.get_running_loop().create_task(self._run_writer(step))
            return
        try:
            waiting = step.send(None)
        except StopIteration:
            return  # written
        except Exception:
            self._gone()
            return
        self._writer = asyncio.get_running_loop().create_task(
            self._run_writer(_resume(step, waiting))
        )

    def _gone(self) -> None:
        """The peer went away while we were writing: nothing more can reach it."""
        self.closing = self.closing or (1006, "gone")
        if self._queue is not None:
            self._queue.clear()
        if self._sink is not None:
            self._frames = None
            self._close_written = True
            self._sink.on_writable = None
            self._done()

    def close(self, code: int, reason: str, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Close after everything already queued has been written (within drain_timeout)."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        sink = self._sink
        if sink is not None:
            if self._frames is None and (sink.writable or sink.closed):
                self.flush()  # nothing waits: the close frame goes out now
            if not self._close_written:
                self._give_up = asyncio.get_running_loop().call_later(drain_timeout, self._drop)
            return
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._run_writer())
        self._give_up = asyncio.get_running_loop().call_later(drain_timeout, self._drop)

    def _drop(self) -> None:
        """A closing socket that could not take what was queued in time: stop writing to
        it. With a sink, abort the connection (the gateway then sees a disconnect).
        Without one, end its ASGI task, after which the server closes the connection
        (ASGI offers no abort: the operating system keeps the socket until the peer
        reads or TCP gives up, but nothing of ours waits on it)."""
        self._give_up = None
        if self._sink is not None:
            if not self._close_written:
                log.info("dropping a socket that did not drain conn=%s", self.id)
                sink = self._sink
                self._gone()
                sink.abort()  # connection_lost follows: the gateway sees a disconnect
            return
        if self._writer is not None:
            log.info("dropping a socket that did not drain conn=%s", self.id)
            if self._queue is not None:
                self._queue.clear()
            if self._abort is not None:
                self._abort()
            self._writer.cancel()

    @property
    def queued(self) -> int:
        if self._sink is not None:
            frames = self._frames
            return 0 if frames is None else 1 if frames.__class__ is bytes else len(frames)
        return 0 if self._queue is None else len(self._queue)

    @property
    def writing(self) -> bool:
        """Events (or a close frame) are waiting to be handed to the transport."""
        if self._sink is not None:
            return self._frames is not None or (
                self.closing is not None and not self._close_written
            )
        return self._writer is not None

    async def drained(self) -> None:
        """Wait until the writer (if one runs) has written the queue and any close frame."""
        if self._sink is not None:
            if self.writing:
                waiter = asyncio.get_running_loop().create_future()
                if self._waiters is None:
                    self._waiters = []
                self._waiters.append(waiter)
                await waiter
            return
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(writer)

    async def _run_writer(self, in_flight: Awaitable[None] | None = None) -> None:
        send = self._send
        try:
            if in_flight is not None:
                await in_flight  # the send that push started and that had to wait
            queue = self._queue
            while queue:
                await send({"type": "websocket.send", "text": queue.popleft()})
            if self.closing is not None:
                code, reason = self.closing
                await send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            self._gone()
        finally:
            self._writer = None
            if self.closing is not None and self._give_up is not None:
                self._give_up.cancel()
                self._give_up = None


@types.coroutine
def _resume(step: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, None, None]:
    """Finish a coroutine that was stepped by hand and is suspended on ``waiting``.

    ``await step`` would resume it at once, before what it waits on is done; instead,
    each object it waits on is handed to the task running us, and it is resumed (or a
    cancellation thrown into it) exactly when that task resumes us. The task protocol
    is the language's (``send``/``throw``/``close``), nothing of asyncio's internals.
    """
    while True:
        try:
            yield waiting
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:
            try:
                waiting = step.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = step.send(None)
            except StopIteration:
                return


def _staff_address(conn: Connection) -> str:
    """The address other nodes are told of: a staff member's only (as of the handshake)."""
    return conn.address if conn.caller.is_staff else ""


class Hub(OnlineDirectory):
    def __init__(self, publish: Callable[[Sequence[Event]], Awaitable[None]] | None = None) -> None:
        self.conns: dict[str, Connection] = {}
        self._by_user: dict[str, set[Connection]] = {}
        self._device_sockets: dict[str, int] = {}  # device_id → its sockets on this node
        self.voice = VoiceRooms(self)
        # Private room → member user ids: who may get a room's events (realtime/rooms.py).
        self.rooms = PrivateRooms()
        # The blocks of this node's online users: whose messages and voice signalling
        # their sockets do not get (realtime/blocks.py; loaded by the gateway).
        self.blocks = BlockIndex()
        self._publish = publish
        self.shutting_down = False
        self.node_id = secrets.token_hex(6)
        # Set when the broker links several nodes: sockets elsewhere count for presence,
        # and nodes that stop sending heartbeats are forgotten.
        self.replicated = False
        self._remote: dict[str, set[str]] = {}  # user_id → conn ids on other nodes
        # conn id → (user_id, address) of staff sockets on other nodes (address bans).
        self._remote_staff: dict[str, tuple[str, str]] = {}
        self._nodes_seen: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        # Sockets with frames to write in this loop turn (Connection.push).
        self.outbox = Outbox()
        # Bans, kicks and live settings (realtime/admin.py), applied as they arrive.
        self.on_admin: Callable[[AdminControl], None] | None = None
        self.metrics: Metrics = NO_METRICS

    async def publish(self, events: Sequence[Event]) -> None:
        assert self._publish is not None
        await self._publish(events)

    # ------------------------------------------------------------ presence

    def online(self, user_ids: Iterable[str]) -> set[str]:
        return {
            user_id
            for user_id in user_ids
            if self._by_user.get(user_id) or self._remote.get(user_id)
        }

    def _is_online(self, user_id: str) -> bool:
        return bool(self._by_user.get(user_id) or self._remote.get(user_id))

    def _tell_presence(self, user_id: str, was_online: bool) -> None:
        """``presence.updated`` to this node's sockets of other users when this node's
        view of the cluster changed for ``user_id`` (call after each change of
        ``_by_user`` or ``_remote``, with what ``_is_online`` said before it).

        Each node announces the changes of its own view to its own sockets: every node
        sees every socket open and close (its own at once, the others' through the
        broker), so whatever the order of arrival each node's last word for a user is
        the cluster's state once the events are in. The user's own sockets are not
        told: the first one is the news, and the last one is gone."""
        online = self._is_online(user_id)
        if online == was_online:
            return
        text = encode_event(PresenceUpdated(sender=user_id, online=online))
        frame = text_frame(text)
        for conn in list(self.conns.values()):
            if conn.user_id != user_id:
                conn.push(text, frame)

    def of_user(self, user_id: str) -> set[Connection]:
        return self._by_user.get(user_id, set())

    def online_users(self) -> set[str]:
        """Every user with a socket on this node or, when replicated, on another one."""
        return set(self._by_user) | set(self._remote)

    def socket_count(self) -> int:
        """Open sockets on this node plus those other nodes reported."""
        return len(self.conns) + sum(len(ids) for ids in self._remote.values())

    def nodes(self) -> list[str]:
        """This node's id, then the other live nodes heard from."""
        return [self.node_id, *sorted(self._nodes_seen)]

    def voice_rooms(self) -> dict[str, list[str]]:
        return self.voice.snapshot()

    def addresses(self, user_ids: Iterable[str]) -> set[str]:
        """Any of these users' sockets on this node, and the sockets other nodes said
        were opened by staff (only those carry an address between nodes)."""
        wanted = set(user_ids)
        here = {
            conn.address
            for user_id in wanted
            for conn in self._by_user.get(user_id, ())
            if conn.address
        }
        there = {address for user_id, address in self._remote_staff.values() if user_id in wanted}
        return here | there

    def drain(self) -> int:
        """Stop taking sockets and ask every open one to reconnect elsewhere (1012).

        What is already queued to a socket is written before it closes; messages in
        flight are stored by the gateway's writer, which keeps running."""
        self.shutting_down = True
        conns = list(self.conns.values())
        for conn in conns:
            conn.close(CLOSE_SERVICE_RESTART, "draining")
        return len(conns)

    def close_for_catch_up(self, opened_before: float | None = None) -> int:
        """Close (1013 ``catch_up``) the sockets that may have missed events because
        cross-node delivery failed: all of them, or those opened before a wall-clock
        time. Each gets what was already queued to it first; its client reconnects and
        pages what it missed (docs/API.md, "Close codes")."""
        closing = [
            conn
            for conn in self.conns.values()
            if opened_before is None or conn.opened_at < opened_before
        ]
        for conn in closing:
            conn.close(CLOSE_TRY_AGAIN, "catch_up")
        return len(closing)

    # ------------------------------------------------------------ lifecycle of a socket

    async def attach(self, conn: Connection, hello: str | None = None) -> None:
        """Snapshot to the newcomer, then ``device.joined`` to everyone else.

        ``device.joined`` goes out when the device comes online on this node, i.e. with
        its first socket here, and never to the device itself (the existing client
        answers its own with a second key and profile sync). A further socket of a device
        that is already online is announced to nobody: the others heard of that device
        already, and announcing every extra socket to every socket made connecting
        quadratic.
        """
        voice = self.voice.snapshot()
        if self.rooms.members:
            may_see, user_id = self.rooms.may_see, conn.user_id
            voice = {room: users for room, users in voice.items() if may_see(room, user_id)}
        conn.push(encode_event(VoicePresenceSnapshot(voice_rooms=voice)))
        if hello is not None:
            conn.push(hello)
        was_online = self._is_online(conn.user_id)
        self.conns[conn.id] = conn
        self.metrics.socket_opened()
        self._by_user.setdefault(conn.user_id, set()).add(conn)
        self._tell_presence(conn.user_id, was_online)
        online = self._device_sockets.get(conn.device_id, 0)
        self._device_sockets[conn.device_id] = online + 1
        events: list[Event] = []
        if not online:
            events.append(DeviceJoined(sender=conn.user_id, device_id=conn.device_id))
        if self.replicated:
            events.append(
                SocketOpened(
                    user_id=conn.user_id, conn_id=conn.id, staff_address=_staff_address(conn)
                )
            )
        if events:
            await self._publish_quietly(*events)

    async def detach(self, conn: Connection) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        self.metrics.socket_closed(conn.closing)
        was_online = self._is_online(conn.user_id)
        remaining = self._device_sockets.pop(conn.device_id, 1) - 1
        if remaining > 0:
            self._device_sockets[conn.device_id] = remaining
        sockets = self._by_user.get(conn.user_id)
        if sockets is not None:
            sockets.discard(conn)
            if not sockets:
                del self._by_user[conn.user_id]
        self._tell_presence(conn.user_id, was_online)
        events: list[Event] = []
        if conn.voice_room is not None:
            room, conn.voice_room = conn.voice_room, None
            events.append(
                VoiceMembership(
                    channel_id=room, user_id=conn.user_id, conn_id=conn.id, joined=False
                )
            )
        if self.replicated:
            events.append(SocketClosed(user_id=conn.user_id, conn_id=conn.id))
        if events:
            await self._publish_quietly(*events)

    async def _publish_quietly(self, *events: Event) -> None:
        """Announcements a socket's life cannot wait for: a broker outage is logged, not raised."""
        try:
            await self.publish(events)
        except Exception:
            log.exception("could not publish %s", ", ".join(type(e).__name__ for e in events))

    # ------------------------------------------------------------ several nodes

    async def start_replication(self, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        """Ask the other nodes what they hold, then send heartbeats and expire silent nodes."""
        self.replicated = True
        await self._publish_quietly(NodeStateRequest(node_id=self.node_id))
        self._heartbeat = asyncio.create_task(self._beat(heartbeat), name="dialtone-heartbeat")

    async def stop_replication(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def _beat(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._publish_quietly(NodeAlive(node_id=self.node_id))
            await asyncio.sleep(interval)
            deadline = loop.time() - NODE_EXPIRY_BEATS * interval
            for node_id, seen in list(self._nodes_seen.items()):
                if seen < deadline:
                    self.forget_node(node_id)

    def forget_node(self, node_id: str) -> None:
        log.warning("node %s stopped answering: forgetting its sockets", node_id)
        self._nodes_seen.pop(node_id, None)
        prefix = node_id + "."
        for conn_id in [c for c in self._remote_staff if c.startswith(prefix)]:
            del self._remote_staff[conn_id]
        for user_id in list(self._remote):
            kept = {c for c in self._remote[user_id] if not c.startswith(prefix)}
            if kept:
                self._remote[user_id] = kept
            else:
                del self._remote[user_id]
                self._tell_presence(user_id, True)
        self.voice.forget_prefix(prefix)

    def _saw(self, conn_or_node_id: str) -> str | None:
        """The node of an id, noted as alive; None for this node's own ids."""
        node_id = conn_or_node_id.partition(".")[0]
        if node_id == self.node_id:
            return None
        self._nodes_seen[node_id] = asyncio.get_running_loop().time()
        return node_id

    def _state(self) -> NodeState:
        return NodeState(
            node_id=self.node_id,
            sockets=[(c.user_id, c.id) for c in self.conns.values()],
            voice=[(c.voice_room, c.user_id, c.id) for c in self.conns.values() if c.voice_room],
            staff_addresses=[
                (c.user_id, c.id, address)
                for c in self.conns.values()
                if (address := _staff_address(c))
            ],
        )

    def _apply_replication(self, event: Event) -> None:
        match event:
            case SocketOpened(user_id=user_id, conn_id=conn_id, staff_address=address):
                if self._saw(conn_id):
                    was_online = self._is_online(user_id)
                    self._remote.setdefault(user_id, set()).add(conn_id)
                    if address:
                        self._remote_staff[conn_id] = (user_id, address)
                    self._tell_presence(user_id, was_online)
            case SocketClosed(user_id=user_id, conn_id=conn_id):
                if self._saw(conn_id):
                    self._remote_staff.pop(conn_id, None)
                    remaining = self._remote.get(user_id)
                    if remaining is not None:
                        remaining.discard(conn_id)
                        if not remaining:
                            del self._remote[user_id]
                            self._tell_presence(user_id, True)
            case NodeAlive(node_id=node_id):
                self._saw(node_id)
            case NodeStateRequest(node_id=node_id):
                if self._saw(node_id) and self.replicated:
                    task = asyncio.create_task(self._publish_quietly(self._state()))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            case NodeState(node_id=node_id, sockets=sockets, voice=voice, staff_addresses=staff):
                if self._saw(node_id):
                    for user_id, conn_id in sockets:
                        was_online = self._is_online(user_id)
                        self._remote.setdefault(user_id, set()).add(conn_id)
                    for user_id, conn_id, address in staff:
                        self._remote_staff[conn_id] = (user_id, address)
                        self._tell_presence(user_id, was_online)
                    for channel_id, user_id, conn_id in voice:
                        self.voice.merge(channel_id, user_id, conn_id)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Empty the voice rooms (peers on other nodes are told), then 1001 to every socket."""
        self.shutting_down = True
        conns = list(self.conns.values())
        leaving = [
            VoiceMembership(channel_id=c.voice_room, user_id=c.user_id, conn_id=c.id, joined=False)
            for c in conns
            if c.voice_room is not None
        ]
        for conn in conns:
            conn.voice_room = None
        if leaving:
            try:
                await self.publish(leaving)
            except Exception:
                log.exception("could not announce voice departures at shutdown")
        for conn in conns:
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        if conns:
            waits = [asyncio.ensure_future(c.drained()) for c in conns if c.writing]
            if waits:
                _, pending = await asyncio.wait(waits, timeout=grace)
                for fut in pending:
                    fut.cancel()

    # ------------------------------------------------------------ delivery

    def broadcast(
        self,
        text: str,
        skip_device: str | None = None,
        skip_users: Collection[str] | None = None,
    ) -> None:
        """One event, encoded once and framed once, to every socket (but ``skip_device``'s
        and those of ``skip_users``)."""
        frame = text_frame(text)
        conns = list(self.conns.values())
        self.metrics.fanout(len(conns))
        if skip_users:
            for conn in conns:
                if conn.device_id != skip_device and conn.user_id not in skip_users:
                    conn.push(text, frame)
            return
        for conn in conns:
            if conn.device_id != skip_device:
                conn.push(text, frame)

    def to_channel(
        self, channel_id: str, text: str, skip_users: Collection[str] | None = None
    ) -> None:
        """An event of one channel: to every socket for a public one, to the members'
        sockets only for a private room; never to ``skip_users``' sockets."""
        members = self.rooms.members.get(channel_id)
        if members is None:
            if self.rooms.ready:
                self.broadcast(text, skip_users=skip_users)
            return
        if skip_users:
            members = members.difference(skip_users)
        self._to_users(members, text)

    def _to_users(self, user_ids: Iterable[str], text: str) -> None:
        frame = text_frame(text)
        by_user = self._by_user
        for user_id in tuple(user_ids):
            for conn in tuple(by_user.get(user_id, ())):
                conn.push(text, frame)

    def _member_removed(self, event: ChannelMemberRemoved) -> None:
        """To the remaining members and the removed user; then, for the removed user,
        ``channel.deleted`` and out of the room's voice room. From then on the filter
        gives them nothing of the room."""
        channel_id, user_id = event.channel_id, event.user_id
        members = self.rooms.members.get(channel_id, set())
        self._to_users({*members, user_id}, encode_event(event))
        self.rooms.apply(event)
        gone = encode_event(ChannelDeleted(channel_id=channel_id))
        leaving: list[Event] = []
        for conn in tuple(self.of_user(user_id)):
            conn.push(gone)
            if conn.voice_room == channel_id:
                conn.voice_room = None
                leaving.append(
                    VoiceMembership(
                        channel_id=channel_id, user_id=user_id, conn_id=conn.id, joined=False
                    )
                )
        if leaving:
            task = asyncio.create_task(self._publish_quietly(*leaving))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def deliver(self, events: Sequence[Event]) -> None:
        for event in events:
            try:
                self._deliver_one(event)
            except Exception:
                log.exception("delivery of %s failed", type(event).__name__)

    def _deliver_one(self, event: Event) -> None:
        match event:
            case ChannelMessageNew(channel_id=channel_id, sender=sender):
                # Not to the sockets of users who blocked the sender: one dict lookup.
                self.to_channel(channel_id, encode_event(event), self.blocks.blocked_by.get(sender))
            case (
                ChannelMessageDeleted(channel_id=channel_id)
                | ChannelRekeyRequired(channel_id=channel_id)
            ):
                self.to_channel(channel_id, encode_event(event))
            case ChannelUpdated(channel_id=channel_id, private=private):
                # A private room this node has not heard of yet reaches nobody.
                if not private or channel_id in self.rooms.members:
                    self.to_channel(channel_id, encode_event(event))
            case ChannelCreated(channel=channel):
                self.rooms.apply(event)
                self.to_channel(channel.id, encode_event(event))
            case ChannelMemberAdded(channel_id=channel_id):
                self.rooms.apply(event)
                self.to_channel(channel_id, encode_event(event))
            case ChannelMemberRemoved():
                self._member_removed(event)
            case BlockChanged():
                self.blocks.apply(event)
            case SessionsRevoked(user_id=user_id, token_hash=token_hash):
                for conn in list(self.of_user(user_id)):
                    if token_hash is None or conn.token_hash == token_hash:
                        conn.close(CLOSE_POLICY, "revoked")
            case DeviceRevoked(sender=user_id, device_id=device_id):
                text = encode_event(event)
                for conn in list(self.of_user(user_id)):
                    if conn.device_id == device_id:
                        conn.close(CLOSE_POLICY, "revoked")
                    else:
                        conn.push(text)
            case VoiceMembership():
                self._saw(event.conn_id)
                self.voice.apply_membership(event)
            case VoiceRelay():
                self.voice.apply_relay(event)
            case DeviceJoined(device_id=device_id):
                self.broadcast(encode_event(event), skip_device=device_id)
            case ChannelDeleted(channel_id=channel_id):
                self.to_channel(channel_id, encode_event(event))
                self.voice.end_room(channel_id)
                self.rooms.apply(event)
            case SocketOpened() | SocketClosed() | NodeAlive() | NodeStateRequest() | NodeState():
                self._apply_replication(event)
            case AdminControl():
                if self.on_admin is not None:
                    self.on_admin(event)
            case _ if isinstance(event, INTERNAL_EVENTS):
                log.warning("no handler for control event %s", type(event).__name__)
            case _:
                self.broadcast(encode_event(event))
