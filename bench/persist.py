"""Messages persisted by 16 unpaced WebSocket senders: stored per second, ack latency.

16 accounts each open one socket and send ``channel.message.send`` for a fixed time,
unpaced: with ``--window 1`` (the default) a sender sends its next message as soon
as the previous one is acknowledged (its own ``channel.message.new``, which the
server sends only after the commit); ``--window N`` keeps N messages in flight per
sender (pipelined). Messages go round-robin over ``--channels`` channels.

The figure is counted in the database after the run (every acknowledged message
must be there, and nothing else), not from the acks alone. Every socket also
receives every message (events go to every connected client), so the generator
reads 16 events per message; it is spread over ``--procs`` processes and its CPU is
reported next to the server's.

    python bench/persist.py [--duration 10] [--window 1] [--channels 1] [--procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
from common import (
    CpuMeter,
    HttpConnection,
    Target,
    User,
    add_target_arguments,
    emit,
    latency_figures,
    log,
    machine_figures,
    own_cpu_seconds,
    register_users,
    report_outcome,
    run_generators,
    target_from_args,
    wait_for_start,
)
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class Incoming(msgspec.Struct):
    type: str
    sender: str = ""
    body: str = ""
    code: str = ""


decoder = msgspec.json.Decoder(Incoming)
encoder = msgspec.json.Encoder()


@dataclass
class SenderJob:
    host: str
    port: int
    user_id: str
    token: str
    channels: list[str]
    window: int
    duration: float
    body_bytes: int


class Sender(asyncio.Protocol):
    """One socket on websockets' sans-I/O protocol over a bare transport (cheap per frame)."""

    def __init__(self, job: SenderJob, index: int) -> None:
        self.job = job
        self.ws = ClientProtocol(parse_uri(f"ws://{job.host}:{job.port}/ws"), max_size=None)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.greeted = asyncio.Event()
        self.prefix = f"{index}:"
        self.pad = base64.b64encode(os.urandom(max(0, job.body_bytes - 40) * 3 // 4)).decode()
        self.sent = 0
        self.in_flight: dict[int, int] = {}  # sequence number → send time (ns)
        self.latencies_ns: list[int] = []
        self.errors: dict[str, int] = {}
        self.stop_sending = False
        self.drained = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = self.ws.connect()
        request.headers["Authorization"] = f"Bearer {self.job.token}"
        self.ws.send_request(request)
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or OSError("connection lost"))
        self.drained.set()

    def send_next(self) -> None:
        seq = self.sent
        self.sent += 1
        channels = self.job.channels
        channel = channels[seq % len(channels)]
        self.in_flight[seq] = time.monotonic_ns()
        frame = {
            "type": "channel.message.send",
            "channel_id": channel,
            "body": f"{self.prefix}{seq}:{self.pad}",
            "sender_name_enc": "c2VuZGVy",
        }
        self.ws.send_text(encoder.encode(frame))

    def start(self) -> None:
        for _ in range(self.job.window):
            self.send_next()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if event.status_code == 101:
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(OSError(f"handshake: {event.status_code}"))
                continue
            if event.opcode is not Opcode.TEXT:
                continue
            incoming = decoder.decode(event.data)
            if incoming.type == "error":
                self.errors[incoming.code] = self.errors.get(incoming.code, 0) + 1
                continue
            if incoming.type == "voice.presence.snapshot":
                # The greeting: the socket is registered (a device is not sent its own
                # device.joined).
                self.greeted.set()
                continue
            if incoming.type != "channel.message.new" or incoming.sender != self.job.user_id:
                continue
            seq = int(incoming.body.split(":", 2)[1])
            began = self.in_flight.pop(seq, None)
            if began is None:
                continue
            self.latencies_ns.append(time.monotonic_ns() - began)
            if not self.stop_sending:
                self.send_next()
            elif not self.in_flight:
                self.drained.set()
        self.flush()  # the next messages, pongs and the like

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _worker(jobs: list[SenderJob], ready: Any, start: Any, results: Any) -> None:
    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        senders: list[Sender] = []
        for job in jobs:
            _, sender = await loop.create_connection(
                lambda job=job: Sender(job, len(senders)), job.host, job.port
            )
            await asyncio.wait_for(sender.opened, 30)
            await asyncio.wait_for(sender.greeted.wait(), 30)
            senders.append(sender)
        await wait_for_start(ready, start)
        cpu0 = own_cpu_seconds()
        t0 = time.monotonic()
        for sender in senders:
            sender.start()
        await asyncio.sleep(jobs[0].duration)
        for sender in senders:
            sender.stop_sending = True
            if not sender.in_flight:
                sender.drained.set()
        await asyncio.wait_for(asyncio.gather(*(s.drained.wait() for s in senders)), 60)
        elapsed = time.monotonic() - t0
        cpu = own_cpu_seconds() - cpu0
        for sender in senders:
            sender.close()
        errors: dict[str, int] = {}
        for sender in senders:
            for code, n in sender.errors.items():
                errors[code] = errors.get(code, 0) + n
        return {
            "sent": sum(s.sent for s in senders),
            "unacked": sum(len(s.in_flight) for s in senders),
            "latencies": [x / 1e9 for s in senders for x in s.latencies_ns],
            "errors": errors,
            "elapsed": elapsed,
            "cpu_seconds": cpu,
        }

    report_outcome(run, ready, results)


def run_senders(jobs: list[SenderJob], processes: int, server: CpuMeter) -> dict[str, Any]:
    parts = [jobs[i::processes] for i in range(processes)]
    outcomes, procs = run_generators(_worker, parts, server, jobs[0].duration + 120)
    errors: dict[str, int] = {}
    for outcome in outcomes:
        for code, n in outcome["errors"].items():
            errors[code] = errors.get(code, 0) + n
    return {
        "sent": sum(o["sent"] for o in outcomes),
        "acked": sum(len(o["latencies"]) for o in outcomes),
        "unacked": sum(o["unacked"] for o in outcomes),
        "latencies": [x for o in outcomes for x in o["latencies"]],
        "errors": errors,
        "elapsed": max(o["elapsed"] for o in outcomes),
        "generator_cpu_seconds": sum(o["cpu_seconds"] for o in outcomes),
        "generator_procs": procs,
    }


def stored_messages(db_url: str) -> int:
    """Rows in channel_messages, counted in the database itself."""
    if db_url.startswith("sqlite"):
        path = db_url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM channel_messages").fetchone()
        return int(count)

    import asyncpg

    async def run() -> int:
        parts = urlsplit(db_url)
        conn = await asyncpg.connect(parts._replace(scheme="postgresql").geturl())
        try:
            count = await conn.fetchval("SELECT count(*) FROM channel_messages")
        finally:
            await conn.close()
        return int(count)

    return asyncio.run(run())


async def prepare(target: Target, senders: int, channels: int) -> tuple[list[User], list[str]]:
    # The first account is the admin (it creates the channels): register it alone.
    users = await register_users(target, 1, 1)
    users += await register_users(target, senders - 1, min(senders, 8))
    conn = HttpConnection(target.host, target.port)
    ids: list[str] = []
    try:
        for _ in range(channels):
            name_enc = base64.b64encode(os.urandom(32)).decode()
            body = await conn.json(
                "POST", "/channels", {"name_enc": name_enc}, users[0].auth, expect=201
            )
            ids.append(body["channel"]["id"])
    finally:
        await conn.close()
    return users, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arguments(parser)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument(
        "--window", type=int, default=1, help="messages in flight per sender (1: wait for ack)"
    )
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--body-bytes", type=int, default=200)
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    args = parser.parse_args()
    machine = machine_figures()
    with target_from_args(args) as target:
        if target.db_url is None:
            raise SystemExit("with --url, persist needs --db-url to count what was stored")
        users, channels = asyncio.run(prepare(target, args.senders, args.channels))
        before = stored_messages(target.db_url)
        log(f"{len(users)} senders ready; sending for {args.duration:.0f} s")
        jobs = [
            SenderJob(
                target.host,
                target.port,
                user.user_id,
                user.token,
                channels,
                args.window,
                args.duration,
                args.body_bytes,
            )
            for user in users
        ]
        server = CpuMeter(target.pid)
        outcome = run_senders(jobs, args.procs, server)
        stored = stored_messages(target.db_url) - before
        server_figures = server.figures()
    elapsed = outcome["elapsed"]
    emit(
        {
            "bench": "persist",
            "db": target.db,
            "senders": args.senders,
            "mode": "ack-paced" if args.window == 1 else f"pipelined, {args.window} in flight",
            "channels": args.channels,
            "body_bytes": args.body_bytes,
            "stored": stored,
            "stored_per_s": round(stored / elapsed, 1),
            "sent": outcome["sent"],
            "acked": outcome["acked"],
            # Acknowledged but not stored would be a loss; stored but not acknowledged
            # would be an event lost on the way back. Both must be 0.
            "acked_not_stored": max(0, outcome["acked"] - stored),
            "stored_not_acked": max(0, stored - outcome["acked"]),
            "error_events": outcome["errors"],
            "ack_latency": latency_figures(outcome["latencies"]),
            "duration_s": round(elapsed, 2),
            "generator_procs": outcome["generator_procs"],
            "generator_cpu_pct": round(100 * outcome["generator_cpu_seconds"] / elapsed, 1),
            **server_figures,
            **machine,
        }
    )


if __name__ == "__main__":
    main()
