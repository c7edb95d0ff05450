"""WebSocket fan-out load generator; prints ONE JSON object.

C sockets are opened over U users; S of them send M messages each (a sender waits for
the echo of its own message before sending the next). Every socket should receive every
message: deliveries expected = S * M * C. Reports deliveries received, deliveries per
second, end-to-end latency (send to receipt on each socket), the time to open the C
sockets, the CPU seconds of this load generator and of the server process.

Starts its own server (``dialtone serve`` on a temporary data folder, rate limits off)
unless ``--url`` points at a running one (then ``--admin-token`` is needed).

    python bench/ws_fanout.py -C 200 -S 4 -M 250
    python bench/ws_fanout.py -C 1000 -S 1 -M 100
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import psutil
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class Incoming(msgspec.Struct):
    type: str
    body: str = ""


decoder = msgspec.json.Decoder(Incoming)


@dataclass
class Stats:
    expected: int = 0
    received: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    closed_codes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last_receipt: float = 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def public_key() -> str:
    from nacl.public import PrivateKey

    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def spawn_server(data_dir: str, admin_token: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DIALTONE_DATA_DIR": data_dir,
            "DIALTONE_LISTEN_ADDR": f"127.0.0.1:{port}",
            "DIALTONE_RATE_LIMITS": "off",
            "DIALTONE_ADMIN_TOKEN": admin_token,
            "DIALTONE_USERNAME_PEPPER": secrets.token_hex(16),
            "DIALTONE_LOG_LEVEL": "warning",
        }
    )
    env.pop("DIALTONE_DB_URL", None)
    env.pop("DIALTONE_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialtone", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


async def start_server(data_dir: str, admin_token: str) -> tuple[subprocess.Popen[bytes], str]:
    proc, port = spawn_server(data_dir, admin_token)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url + "/health")).status_code == 200:
                    return proc, url
            await asyncio.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not become healthy")


async def register_users(url: str, admin_token: str, count: int) -> list[str]:
    tokens: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> str:
            async with sem:
                invite = await client.post(
                    "/server/invites", headers={"X-Admin-Token": admin_token}
                )
                invite.raise_for_status()
                response = await client.post(
                    "/auth/register",
                    json={
                        "username": f"b{i}{secrets.token_hex(3)}",
                        "password": "password1",
                        "public_key": public_key(),
                        "invite_token": invite.json()["token"],
                    },
                )
                response.raise_for_status()
                token: str = response.json()["token"]
                return token

        # The first account becomes admin (it creates the channel): register it alone.
        tokens = [await one(0)]
        tokens += await asyncio.gather(*(one(i) for i in range(1, count)))
        channel = await client.post(
            "/channels",
            json={"name_enc": "YmVuY2g="},
            headers={"Authorization": f"Bearer {tokens[0]}"},
        )
        channel.raise_for_status()
        tokens.append(channel.json()["channel"]["id"])
    return tokens


class Client(asyncio.Protocol):
    """A lean WebSocket client (websockets' sans-I/O protocol on a bare asyncio transport):
    the load generator shares the CPU with the server, so it must cost little per frame."""

    def __init__(self, url: str, token: str, stats: Stats, echoes: dict[str, asyncio.Event]):
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.token = token
        self.stats = stats
        self.echoes = echoes
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = self.ws.connect()
        request.headers["Authorization"] = f"Bearer {self.token}"
        self.ws.send_request(request)
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        stats = self.stats
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if event.status_code == 101:
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(OSError(f"handshake: {event.status_code}"))
                continue
            if event.opcode is Opcode.CLOSE:
                close = self.ws.close_rcvd
                code = str(close.code) if close else "none"
                stats.closed_codes[code] = stats.closed_codes.get(code, 0) + 1
                continue
            if event.opcode is not Opcode.TEXT:
                continue
            incoming = decoder.decode(event.data)
            if incoming.type != "channel.message.new":
                if incoming.type == "error":
                    stats.errors += 1
                continue
            now = time.monotonic_ns()
            sent_ns, _, rest = incoming.body.partition("|")
            stats.latencies_ns.append(now - int(sent_ns))
            stats.received += 1
            waiter = self.echoes.get(rest)
            if waiter is not None:
                waiter.set()
            if stats.received >= stats.expected:
                stats.done.set()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or OSError("connection lost"))

    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index] / 1e6


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp: tempfile.TemporaryDirectory[str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    admin_token = args.admin_token or secrets.token_urlsafe(24)
    if args.url:
        url = args.url.rstrip("/")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="dialtone-bench-")
        proc, url = await start_server(tmp.name, admin_token)
    try:
        users = max(1, min(args.users, args.connections))
        registered = await register_users(url, admin_token, users)
        channel_id, tokens = registered[-1], registered[:-1]
        ws_url = url.replace("http", "ws", 1) + "/ws"

        stats = Stats(expected=args.connections * args.senders * args.messages)
        sockets: list[Client] = []
        echoes: dict[str, asyncio.Event] = {}
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        server_ps = psutil.Process(proc.pid) if proc else None
        server_cpu0 = sum(server_ps.cpu_times()[:2]) if server_ps else 0.0

        sem = asyncio.Semaphore(args.open_concurrency)

        loop = asyncio.get_running_loop()
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)

        async def open_one(i: int) -> Client:
            async with sem:
                _, client = await loop.create_connection(
                    lambda: Client(ws_url, tokens[i % len(tokens)], stats, echoes),
                    host,
                    int(port),
                )
                await asyncio.wait_for(client.opened, 60)
                return client

        t_open = time.perf_counter()
        sockets = list(await asyncio.gather(*(open_one(i) for i in range(args.connections))))
        open_seconds = time.perf_counter() - t_open
        await asyncio.sleep(args.settle)

        async def sender(index: int, ws: Client) -> None:
            pad = "x" * max(0, args.body_bytes - 40)
            for i in range(args.messages):
                key = f"{index}:{i}|{pad}"
                echoes[key] = waiter = asyncio.Event()
                body = f"{time.monotonic_ns()}|{key}"
                ws.send_text(
                    json.dumps(
                        {
                            "type": "channel.message.send",
                            "channel_id": channel_id,
                            "body": body,
                            "sender_name_enc": "bmFtZQ==",
                        }
                    )
                )
                await asyncio.wait_for(waiter.wait(), 30)
                del echoes[key]

        t_send = time.perf_counter()
        await asyncio.gather(*(sender(i, sockets[i]) for i in range(args.senders)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stats.done.wait(), args.drain_timeout)
        elapsed = time.perf_counter() - t_send

        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = (sum(server_ps.cpu_times()[:2]) - server_cpu0) if server_ps else None
        server_rss = server_ps.memory_info().rss if server_ps else None
        for client in sockets:
            client.close()

        lat = sorted(stats.latencies_ns)
        return {
            "connections": args.connections,
            "users": users,
            "senders": args.senders,
            "messages_per_sender": args.messages,
            "body_bytes": args.body_bytes,
            "deliveries_expected": stats.expected,
            "deliveries_received": stats.received,
            "deliveries_lost": stats.expected - stats.received,
            "deliveries_per_second": round(stats.received / elapsed, 1) if elapsed else 0.0,
            "send_phase_seconds": round(elapsed, 3),
            "latency_ms": {
                "p50": round(percentile(lat, 0.50), 2),
                "p95": round(percentile(lat, 0.95), 2),
                "p99": round(percentile(lat, 0.99), 2),
                "max": round(lat[-1] / 1e6, 2) if lat else 0.0,
            },
            "open_seconds": round(open_seconds, 3),
            "sockets_closed_by_server": stats.closed_codes,
            "error_events": stats.errors,
            "loadgen_cpu_seconds": round(
                (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 2
            ),
            "server_cpu_seconds": round(server_cpu, 2) if server_cpu is not None else None,
            "server_rss_mib": round(server_rss / 2**20, 1) if server_rss else None,
            "server": "external" if args.url else "dialtone serve (sqlite, rate limits off)",
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-C", "--connections", type=int, default=200)
    parser.add_argument("-U", "--users", type=int, default=50)
    parser.add_argument("-S", "--senders", type=int, default=4)
    parser.add_argument("-M", "--messages", type=int, default=250)
    parser.add_argument("--body-bytes", type=int, default=200)
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--admin-token", help="the admin token of --url's server")
    parser.add_argument("--open-concurrency", type=int, default=50)
    parser.add_argument("--settle", type=float, default=1.0, help="pause after opening")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.url and not args.admin_token:
        parser.error("--url needs --admin-token")
    if args.senders > args.connections:
        parser.error("senders must not outnumber connections")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
