"""Registrations and logins at concurrency 16: per second, p50/p99.

Both hash or verify an argon2id password (19 MiB, t=2, p=1 by default), so they
measure how well the server keeps that CPU work off its event loop and spreads
it over the cores. The logins come from wrk (``--generator wrk``, the default: compiled,
cycling over the accounts for ``--duration`` seconds) or from the Python client
(``--generator python``: ``--logins`` requests). Registrations always use the Python
client. Usage: ``python bench/login.py [--generator wrk|python] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    run_wrk,
    target_from_args,
)


async def registered(
    target: Target, users_count: int, concurrency: int
) -> tuple[list[Any], dict[str, Any]]:
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
    return users, registrations


def bench_wrk(target: Target, args: Any) -> dict[str, Any]:
    users, registrations = asyncio.run(registered(target, args.users, args.concurrency))
    bodies = [
        json.dumps(
            {"username": u.username, "password": u.password, "public_key": u.public_key}
        ).encode()
        for u in users
    ]
    figures = run_wrk(
        target,
        "POST",
        "/auth/login",
        {},
        args.concurrency,
        args.duration,
        CpuMeter(target.pid),
        bodies=bodies,
    )
    return {
        "bench": "login",
        "db": target.db,
        "concurrency": args.concurrency,
        **figures,
        "logins_per_s": figures["req_per_s"],
        "registrations": registrations,
    }


async def bench(target: Target, users_count: int, logins: int, concurrency: int) -> dict[str, Any]:
    users, registrations = await registered(target, users_count, concurrency)
    server = CpuMeter(target.pid)
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
        "generator": "python",
        **server.figures(),
        "server_us_per_request": server.per_unit_us(logins),
        "registrations": registrations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arguments(parser)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--users", type=int, default=32, help="accounts registered first")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--generator", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of wrk load")
    args = parser.parse_args()
    machine = machine_figures()
    with target_from_args(args) as target:
        if args.generator == "wrk":
            result = bench_wrk(target, args)
        else:
            result = asyncio.run(bench(target, args.users, args.logins, args.concurrency))
    emit({**result, **machine})


if __name__ == "__main__":
    main()
