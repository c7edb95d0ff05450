"""Idle sockets: open N authenticated WebSockets and hold them; time to open, server RSS.

Registers ``--users`` accounts (one device each), then opens ``--connections``
sockets spread over them, ``--open-concurrency`` handshakes at a time, from
127.0.0.x source addresses (``--source-ips``) so ephemeral ports never run short.
Reports the time to open them all, the server's RSS before and after (and the
difference per socket), the server's CPU and this generator's CPU while opening,
and how many frames the sockets received (greetings and device announcements).
Raises RLIMIT_NOFILE to its hard limit first (the server started here inherits it).

    python bench/idle.py                    # 10 000 sockets over 100 users
    python bench/idle.py -C 2000 -U 2000    # one device per socket
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from common import (
    CpuMeter,
    Target,
    WsClient,
    add_target_arguments,
    emit,
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


async def bench(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    users = await register_users(target, min(args.users, args.connections))
    log(f"registered {len(users)} users")
    ws_url = f"ws://{target.host}:{target.port}/ws"
    server = CpuMeter(target.pid)
    # Warm-up: one socket opened and closed, so the first-use allocations of the
    # WebSocket path are not counted against the idle sockets.
    warm = await open_ws(target, lambda: WsClient(ws_url, users[0].token))
    await asyncio.sleep(0.3)
    warm.close()
    await asyncio.sleep(args.settle)
    rss_before = server.process.memory_info().rss if server.process else None

    semaphore = asyncio.Semaphore(args.open_concurrency)
    clients: list[WsClient] = []
    failures: dict[str, int] = {}

    async def one(index: int) -> None:
        token = users[index % len(users)].token
        async with semaphore:
            try:
                clients.append(
                    await open_ws(
                        target,
                        lambda: WsClient(ws_url, token),
                        source_address(index, args.source_ips),
                    )
                )
            except (OSError, TimeoutError) as exc:
                key = type(exc).__name__ + (f": {exc}" if str(exc).startswith("handshake") else "")
                failures[key] = failures.get(key, 0) + 1

    gc.disable()  # the generator's own collections would only add noise to the timing
    cpu0 = own_cpu_seconds()
    server.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.connections)))
    open_seconds = time.perf_counter() - t0
    server.stop()
    generator_cpu = own_cpu_seconds() - cpu0
    gc.enable()
    log(f"opened {len(clients)} sockets in {open_seconds:.2f} s")

    await asyncio.sleep(args.settle)
    rss_after = server.process.memory_info().rss if server.process else None
    closed = sum(1 for c in clients if c.close_code is not None or c.transport is None)
    frames = sum(c.frames for c in clients)
    held = len(clients) - closed
    for client in clients:
        client.close()
    await asyncio.sleep(0.2)

    per_socket = None
    if rss_before is not None and rss_after is not None and held:
        per_socket = round((rss_after - rss_before) / held / 1024, 1)
    return {
        "connections": args.connections,
        "users": len(users),
        "opened": len(clients),
        "held_after_settle": held,
        "failures": failures,
        "open_seconds": round(open_seconds, 3),
        "opens_per_s": round(len(clients) / open_seconds, 1) if open_seconds else None,
        "frames_received": frames,
        "server_rss_before_mib": None if rss_before is None else round(rss_before / 2**20, 1),
        "server_rss_after_mib": None if rss_after is None else round(rss_after / 2**20, 1),
        "server_rss_per_socket_kib": per_socket,
        "server_cpu_seconds_open": round(server.cpu_seconds, 2),
        "generator_cpu_seconds_open": round(generator_cpu, 2),
        "generator_procs": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arguments(parser)
    parser.add_argument("-C", "--connections", type=int, default=10_000)
    parser.add_argument("-U", "--users", type=int, default=100, help="accounts, one device each")
    parser.add_argument("--open-concurrency", type=int, default=100)
    parser.add_argument("--source-ips", type=int, default=16, help="127.0.0.x addresses to use")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before reading RSS")
    args = parser.parse_args()
    nofile = raise_open_file_limit()
    if args.connections + 100 > nofile:
        raise SystemExit(f"RLIMIT_NOFILE is {nofile}: too low for {args.connections} sockets")
    machine = machine_figures()
    with target_from_args(args) as target:
        figures = run_async(bench(target, args))
    emit({"bench": "idle", "db": target.db, **figures, **machine})


if __name__ == "__main__":
    main()
