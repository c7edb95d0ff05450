"""The hub's direct frame path against a recording sink: what goes into each write.

The real protocol is exercised in test_wsserver; here a sink that records its calls
shows the write pattern itself: one write per socket per loop turn, frames in order,
the backlog bound, the close after what was queued, and the drain timeout's abort.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dialtone.realtime.hub import CLOSE_TRY_AGAIN, Connection, Hub, Outbox
from dialtone.realtime.wsserver import text_frame
from dialtone.services.context import Caller


class Sink:
    def __init__(self) -> None:
        self.closed = False
        self.writable = True
        self.on_writable: Callable[[], None] | None = None
        self.calls: list[tuple[str, Any]] = []

    def write_frames(self, data: bytes) -> None:
        assert not self.closed
        self.calls.append(("write", data))

    def send_close(self, code: int, reason: str = "") -> None:
        self.calls.append(("close", (code, reason)))
        self.closed = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closed = True

    def resume(self) -> None:
        self.writable = True
        assert self.on_writable is not None
        self.on_writable()


def connection(sink: Sink, outbox: Outbox, limit: int = 8) -> Connection:
    caller = Caller(user_id="u", device_id="d", is_admin=False, is_trusted=True, token_hash="h")
    return Connection(caller, _no_send, limit, sink=sink, outbox=outbox)


async def _no_send(message: dict[str, Any]) -> None:
    raise AssertionError("a socket with a sink is never sent to through ASGI")


async def test_several_events_in_one_turn_are_one_write_in_order() -> None:
    outbox = Outbox()
    sinks = [Sink(), Sink()]
    conns = [connection(sink, outbox) for sink in sinks]
    hub = Hub()
    for conn in conns:
        hub.conns[conn.id] = conn
    texts = [f'{{"type":"e","n":{i}}}' for i in range(3)]
    for text in texts:
        hub.broadcast(text)
    assert all(sink.calls == [] for sink in sinks)  # nothing before the loop turns
    await asyncio.sleep(0)
    expected = b"".join(text_frame(t) for t in texts)
    for sink, conn in zip(sinks, conns, strict=True):
        assert sink.calls == [("write", expected)]
        assert conn.queued == 0
        assert not conn.writing


async def test_a_paused_socket_keeps_its_frames_then_is_closed_1013_after_them() -> None:
    outbox = Outbox()
    sink = Sink()
    conn = connection(sink, outbox, limit=4)
    sink.writable = False
    for i in range(4):
        conn.push(f"{i}")
    assert conn.queued == 4
    await asyncio.sleep(0)
    assert sink.calls == []  # paused: nothing written, nothing lost
    conn.push("over the limit")  # the fifth: the socket is closed after the four
    assert conn.closing == (CLOSE_TRY_AGAIN, "slow_consumer")
    conn.push("after the close")  # ignored
    sink.resume()
    assert sink.calls == [
        ("write", b"".join(text_frame(f"{i}") for i in range(4))),
        ("close", (CLOSE_TRY_AGAIN, "slow_consumer")),
    ]
    await asyncio.wait_for(conn.drained(), 1)
    assert not conn.writing


async def test_a_socket_that_does_not_drain_in_time_is_aborted() -> None:
    sink = Sink()
    conn = connection(sink, Outbox())
    sink.writable = False
    conn.push("stuck")
    conn.close(1001, "server shutting down", drain_timeout=0.01)
    await asyncio.wait_for(conn.drained(), 5)  # woken by the drain timer's abort
    assert sink.calls == [("abort", None)]
    assert conn.queued == 0
    assert not conn.writing


async def test_an_idle_socket_is_closed_at_once_and_a_gone_one_is_forgotten() -> None:
    sink = Sink()
    conn = connection(sink, Outbox())
    conn.close(1008, "revoked")
    assert sink.calls == [("close", (1008, "revoked"))]
    assert not conn.writing
    gone = Sink()
    other = connection(gone, Outbox())
    other.push("x")
    gone.closed = True  # the peer left before the flush
    await asyncio.sleep(0)
    assert gone.calls == []
    assert other.closing == (1006, "gone")
    assert other.queued == 0
