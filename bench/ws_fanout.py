"""WebSocket fan-out load generator; prints ONE JSON object.

C sockets are opened over U users (one device each); S of them send M messages each
(a sender waits for the echo of its own message before sending the next). Every
socket should receive every message: deliveries expected = S * M * C. Reports
deliveries received, deliveries per second, end-to-end latency (send to receipt on
each socket), the time to open the C sockets, and the CPU of this load generator
and of the server, for the opening and for the sending.

The server, registrations and figures come from bench/common.py (``--url`` targets a
running server). ``-U`` equal to ``-C`` gives every socket a device of its own.
The sockets are driven by bench/wsgen (Go, built by ``make bench-deps``; the default,
``--generator go``) or by the Python client in common.py (``--generator python``).
``--rate R`` (Go only) makes each sender send R messages a second whatever the acks,
for latency at a fixed load; the default 0 is ack-paced. Every JSON reports the
generator's CPU share and the server's CPU microseconds per delivery.

    python bench/ws_fanout.py -C 200 -S 4 -M 250
    python bench/ws_fanout.py -C 1000 -S 1 -M 100
    python bench/ws_fanout.py -C 200 -S 4 -M 250 --rate 25    # 20k deliveries/s
    python bench/ws_fanout.py -C 1000 -U 1000 -S 1 -M 100
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from common import (
    CpuMeter,
    HttpConnection,
    Target,
    WsClient,
    add_target_arguments,
    emit,
    latency_figures,
    log,
    machine_figures,
    open_ws,
    own_cpu_seconds,
    raise_open_file_limit,
    register_users,
    run_async,
    source_address,
    target_from_args,
)


class Incoming(msgspec.Struct):
    type: str
    body: str = ""


decoder = msgspec.json.Decoder(Incoming)


@dataclass
class Stats:
    expected: int = 0
    received: int = 0
    latencies: list[float] = field(default_factory=list)
    closed_codes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class FanoutClient(WsClient):
    def __init__(self, ws_url: str, token: str, stats: Stats, echoes: dict[str, asyncio.Event]):
        super().__init__(ws_url, token)
        self.stats = stats
        self.echoes = echoes

    def on_text(self, data: bytes) -> None:
        stats = self.stats
        incoming = decoder.decode(data)
        if incoming.type != "channel.message.new":
            if incoming.type == "error":
                stats.errors += 1
            return
        now = time.monotonic_ns()
        sent_ns, _, rest = incoming.body.partition("|")
        stats.latencies.append((now - int(sent_ns)) / 1e9)
        stats.received += 1
        waiter = self.echoes.get(rest)
        if waiter is not None:
            waiter.set()
        if stats.received >= stats.expected:
            stats.done.set()

    def on_close(self, code: int) -> None:
        key = str(code)
        self.stats.closed_codes[key] = self.stats.closed_codes.get(key, 0) + 1


async def prepare(target: Target, args: argparse.Namespace) -> tuple[list[Any], str]:
    """Register the accounts and create the channel (the first account is the admin)."""
    users = await register_users(target, 1, 1)
    users += await register_users(target, max(1, min(args.users, args.connections)) - 1)
    conn = HttpConnection(target.host, target.port)
    try:
        name_enc = base64.b64encode(os.urandom(32)).decode()
        body = await conn.json(
            "POST", "/channels", {"name_enc": name_enc}, users[0].auth, expect=201
        )
    finally:
        await conn.close()
    log(f"registered {len(users)} users")
    return users, body["channel"]["id"]


def wsgen_path() -> str:
    candidate = os.path.join(os.path.dirname(sys.executable), "wsgen")
    found = candidate if os.path.exists(candidate) else shutil.which("wsgen")
    if found is None:
        raise SystemExit("bench/wsgen is not built: run `make bench-deps`")
    return found


def bench_go(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    users, channel_id = run_async(prepare(target, args))
    job = {
        "host": target.host,
        "port": target.port,
        "tokens": [users[i % len(users)].token for i in range(args.connections)],
        "source_ips": [
            ip for i in range(args.source_ips) if (ip := source_address(i, args.source_ips))
        ],
        "channel_id": channel_id,
        "senders": args.senders,
        "messages": args.messages,
        "rate": args.rate,
        "body_bytes": args.body_bytes,
        "open_concurrency": args.open_concurrency,
        "drain_timeout": args.drain_timeout,
    }
    server = CpuMeter(target.pid)
    process = subprocess.Popen(
        [wsgen_path()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        server.start()
        process.stdin.write(json.dumps(job) + "\n")
        process.stdin.flush()
        if process.stdout.readline().strip() != "opened":
            raise RuntimeError("wsgen failed while opening the sockets")
        server.stop()
        open_server_cpu = server.cpu_seconds
        time.sleep(args.settle)
        server.start()
        process.stdin.write("start\n")
        process.stdin.flush()
        if process.stdout.readline().strip() != "sent":
            raise RuntimeError("wsgen failed while sending")
        server.stop()
        figures = json.loads(process.stdout.readline())
    finally:
        if process.poll() is None:
            process.stdin.close()
        if process.wait(timeout=60) != 0:
            raise RuntimeError(f"wsgen exited with {process.returncode}")
    open_generator_cpu = figures.pop("open_generator_cpu_s")
    return {
        "connections": args.connections,
        "users": len(users),
        "senders": args.senders,
        "messages_per_sender": args.messages,
        "rate_per_sender": args.rate or "ack-paced",
        "body_bytes": args.body_bytes,
        **figures,
        "open_cpu": {
            "generator_cpu_seconds": open_generator_cpu,
            "server_cpu_seconds": round(open_server_cpu, 2),
        },
        **server.figures(),
        "server_us_per_delivery": server.per_unit_us(figures["deliveries_received"]),
    }


async def bench(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    users, channel_id = await prepare(target, args)
    ws_url = f"ws://{target.host}:{target.port}/ws"

    stats = Stats(expected=args.connections * args.senders * args.messages)
    echoes: dict[str, asyncio.Event] = {}
    server = CpuMeter(target.pid)
    semaphore = asyncio.Semaphore(args.open_concurrency)

    async def open_one(index: int) -> WsClient:
        token = users[index % len(users)].token
        async with semaphore:
            return await open_ws(
                target,
                lambda: FanoutClient(ws_url, token, stats, echoes),
                source_address(index, args.source_ips),
            )

    cpu0 = own_cpu_seconds()
    server.start()
    t_open = time.perf_counter()
    sockets = list(await asyncio.gather(*(open_one(i) for i in range(args.connections))))
    open_seconds = time.perf_counter() - t_open
    server.stop()
    open_cpu = {
        "generator_cpu_seconds": round(own_cpu_seconds() - cpu0, 2),
        "server_cpu_seconds": round(server.cpu_seconds, 2),
    }
    await asyncio.sleep(args.settle)

    pad = "x" * max(0, args.body_bytes - 40)

    async def sender(index: int, ws: WsClient) -> None:
        for i in range(args.messages):
            key = f"{index}:{i}|{pad}"
            echoes[key] = waiter = asyncio.Event()
            frame = {
                "type": "channel.message.send",
                "channel_id": channel_id,
                "body": f"{time.monotonic_ns()}|{key}",
                "sender_name_enc": "bmFtZQ==",
            }
            ws.send_text(msgspec.json.encode(frame).decode())
            await asyncio.wait_for(waiter.wait(), 30)
            del echoes[key]

    cpu0 = own_cpu_seconds()
    server.start()
    t_send = time.perf_counter()
    await asyncio.gather(*(sender(i, sockets[i]) for i in range(args.senders)))
    try:
        await asyncio.wait_for(stats.done.wait(), args.drain_timeout)
    except TimeoutError:
        log("not every delivery arrived")
    elapsed = time.perf_counter() - t_send
    server.stop()
    generator_cpu = own_cpu_seconds() - cpu0
    for client in sockets:
        client.close()

    return {
        "connections": args.connections,
        "users": len(users),
        "senders": args.senders,
        "messages_per_sender": args.messages,
        "body_bytes": args.body_bytes,
        "deliveries_expected": stats.expected,
        "deliveries_received": stats.received,
        "deliveries_lost": stats.expected - stats.received,
        "deliveries_per_s": round(stats.received / elapsed, 1) if elapsed else 0.0,
        "send_phase_s": round(elapsed, 3),
        **latency_figures(stats.latencies),
        "open_s": round(open_seconds, 3),
        "open_cpu": open_cpu,
        "sockets_closed_by_server": stats.closed_codes,
        "error_events": stats.errors,
        "generator": "python",
        "generator_cpu_pct": round(100 * generator_cpu / elapsed, 1) if elapsed else None,
        **server.figures(),
        "server_us_per_delivery": server.per_unit_us(stats.received),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arguments(parser)
    parser.add_argument("-C", "--connections", type=int, default=200)
    parser.add_argument("-U", "--users", type=int, default=50, help="accounts, one device each")
    parser.add_argument("-S", "--senders", type=int, default=4)
    parser.add_argument("-M", "--messages", type=int, default=250)
    parser.add_argument("--body-bytes", type=int, default=200)
    parser.add_argument("--open-concurrency", type=int, default=50)
    parser.add_argument("--source-ips", type=int, default=8, help="127.0.0.x addresses to use")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after opening")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--generator", choices=("go", "python"), default="go")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages/s per sender (0: ack-paced; go only)"
    )
    args = parser.parse_args()
    if args.senders > args.connections:
        parser.error("senders must not outnumber connections")
    if args.rate and args.generator != "go":
        parser.error("--rate needs --generator go")
    raise_open_file_limit()
    machine = machine_figures()
    with target_from_args(args) as target:
        if args.generator == "go":
            figures = bench_go(target, args)
        else:
            figures = run_async(bench(target, args))
    emit({"bench": "ws_fanout", "db": target.db, **figures, **machine})


if __name__ == "__main__":
    main()
