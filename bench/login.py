"""Registrations and logins at concurrency 16: per second, p50/p99.

Both hash or verify an argon2id password (19 MiB, t=2, p=1 by default), so they
measure how well the server keeps that CPU work off its event loop and spreads
it over the cores. Usage: ``python bench/login.py [--logins 200] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from common import (
    ConnectionPool,
    CpuMeter,
    Target,
    add_target_arguments,
    emit,
    gather_limited,
    latency_figures,
    log,
    machine_figures,
    own_cpu_seconds,
    register_users,
    target_from_args,
)


async def bench(target: Target, users_count: int, logins: int, concurrency: int) -> dict[str, Any]:
    server = CpuMeter(target.pid)

    reg_latencies: list[float] = []
    server.start()
    t0 = time.monotonic()
    users = await register_users(target, users_count, concurrency, reg_latencies)
    reg_elapsed = time.monotonic() - t0
    server.stop()
    registrations = {
        "count": len(users),
        "per_s": round(len(users) / reg_elapsed, 1),
        **latency_figures(reg_latencies),
        **server.figures(),
    }
    log(f"registered {len(users)} users in {reg_elapsed:.2f} s")

    pool = ConnectionPool(target.host, target.port, concurrency)
    latencies: list[float] = []

    async def login(index: int) -> None:
        user = users[index % len(users)]
        began = time.perf_counter()
        await pool.json(
            "POST",
            "/auth/login",
            {"username": user.username, "password": user.password, "public_key": user.public_key},
            expect=200,
        )
        latencies.append(time.perf_counter() - began)

    try:
        await gather_limited(concurrency, concurrency, login)  # warm the connections
        latencies.clear()
        cpu0 = own_cpu_seconds()
        server.start()
        t0 = time.monotonic()
        await gather_limited(logins, concurrency, login)
        elapsed = time.monotonic() - t0
        server.stop()
        generator_cpu = own_cpu_seconds() - cpu0
    finally:
        await pool.close()
    return {
        "bench": "login",
        "db": target.db,
        "concurrency": concurrency,
        "logins": logins,
        "logins_per_s": round(logins / elapsed, 1),
        **latency_figures(latencies),
        "duration_s": round(elapsed, 2),
        "generator_procs": 1,
        "generator_cpu_pct": round(100 * generator_cpu / elapsed, 1),
        **server.figures(),
        "registrations": registrations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arguments(parser)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--users", type=int, default=32, help="accounts registered first")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    machine = machine_figures()
    with target_from_args(args) as target:
        result = asyncio.run(bench(target, args.users, args.logins, args.concurrency))
    emit({**result, **machine})


if __name__ == "__main__":
    main()
