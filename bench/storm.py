"""Fan-out latency during a login storm: bench/ws_fanout.py with and without 20 logins/s.

Runs ``bench/ws_fanout.py -C 200 -S 4 -M 250 --url ...`` as it is (a process of its
own, against a fresh server each time: SQLite, or PostgreSQL with
``DIALTONE_BENCH_DB=postgres``) ``--rounds`` times quietly and ``--rounds`` times
while another process logs in
at ``--rate`` per second (open loop: a login starts every 1/rate s whether or not the
previous ones have finished), alternating, so slow drifts of a shared machine hit both
sides alike. Prints one JSON object: the fan-out figures of each run, the median p99
of each side and their ratio, the logins' own figures and the server's CPU.

    python bench/storm.py [--rate 20] [--rounds 2] [-C 200 -S 4 -M 250]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CpuMeter,
    HttpConnection,
    HttpError,
    User,
    emit,
    latency_figures,
    log,
    machine_figures,
    own_cpu_seconds,
    register_users,
    started_server,
)

HERE = Path(__file__).resolve().parent


def _storm(
    host: str, port: int, users: list[User], rate: float, ready: Any, stop: Any, results: Any
) -> None:
    """Log in at ``rate`` per second until ``stop`` is set (runs in its own process)."""

    async def run() -> dict[str, Any]:
        idle: list[HttpConnection] = []
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        errors = 0

        async def login(user: User) -> None:
            nonlocal errors
            conn = idle.pop() if idle else HttpConnection(host, port)
            body = json.dumps(
                {
                    "username": user.username,
                    "password": user.password,
                    "public_key": user.public_key,
                }
            ).encode()
            began = time.perf_counter()
            try:
                status, _ = await conn.request("POST", "/auth/login", body)
            except HttpError:
                errors += 1
                await conn.close()
                return
            latencies.append(time.perf_counter() - began)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            idle.append(conn)

        loop = asyncio.get_running_loop()
        ready.put(1)
        tasks: set[asyncio.Task[None]] = set()
        cpu0 = own_cpu_seconds()
        t0 = loop.time()
        started = 0
        while not stop.is_set():
            task = asyncio.create_task(login(users[started % len(users)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            started += 1
            await asyncio.sleep(max(0.0, t0 + started / rate - loop.time()))
        elapsed = loop.time() - t0
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        for conn in idle:
            await conn.close()
        return {
            "started": started,
            "completed": len(latencies),
            "per_s": round(len(latencies) / elapsed, 1),
            "statuses": statuses,
            "errors": errors,
            **latency_figures(latencies),
            "generator_cpu_pct": round(100 * (own_cpu_seconds() - cpu0) / elapsed, 1),
        }

    results.put(asyncio.run(run()))


def count_rows(db_url: str, table: str) -> int:
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.split(":///", 1)[1]) as conn:
            (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(count)

    import asyncpg

    async def run() -> int:
        conn = await asyncpg.connect(db_url.replace("+asyncpg", ""))
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await conn.close()

    return asyncio.run(run())


def fanout_run(args: argparse.Namespace, rate: float | None) -> dict[str, Any]:
    """One ws_fanout.py run on a fresh server, with a login storm beside it when ``rate``."""
    db = os.environ.get("DIALTONE_BENCH_DB", "sqlite").strip().lower() or "sqlite"
    with started_server(db) as target:
        assert target.db_url is not None
        command = [
            sys.executable,
            str(HERE / "ws_fanout.py"),
            "-C",
            str(args.connections),
            "-S",
            str(args.senders),
            "-M",
            str(args.messages),
            "--url",
            target.base_url,
            "--admin-token",
            target.admin_token,
        ]
        server = CpuMeter(target.pid)
        server.start()
        fanout = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stormer = None
        context = multiprocessing.get_context("spawn")
        ready, stop, results = context.Queue(), context.Event(), context.Queue()
        storm_began = None
        try:
            if rate:
                # ws_fanout.py's first account must be the server's first (the admin, who
                # creates its channel): the storm's accounts come after it.
                while count_rows(target.db_url, "users") < 1:
                    time.sleep(0.02)
                users = asyncio.run(register_users(target, args.accounts, args.accounts))
                stormer = context.Process(
                    target=_storm,
                    args=(target.host, target.port, users, rate, ready, stop, results),
                )
                stormer.start()
                ready.get(timeout=60)
                storm_began = time.monotonic()
            out, err = fanout.communicate(timeout=600)
            ended = time.monotonic()
        finally:
            stop.set()
            if fanout.poll() is None:
                fanout.kill()
        server.stop()
        if fanout.returncode != 0:
            raise RuntimeError(f"ws_fanout.py failed: {err[-2000:]}")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        result.update(server.figures())
        if stormer is not None and storm_began is not None:
            result["logins"] = results.get(timeout=60)
            stormer.join(timeout=10)
            # The storm must have been on for the whole send phase to count.
            result["storm_covered_send_phase"] = ended - storm_began > result["send_phase_s"] + 0.5
    return result


def p99(result: dict[str, Any]) -> float:
    value: float = result["p99_ms"]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="logins per second")
    parser.add_argument("--rounds", type=int, default=2, help="runs on each side")
    parser.add_argument("-C", "--connections", type=int, default=200)
    parser.add_argument("-S", "--senders", type=int, default=4)
    parser.add_argument("-M", "--messages", type=int, default=250)
    parser.add_argument("--accounts", type=int, default=8, help="accounts the storm cycles over")
    args = parser.parse_args()
    machine = machine_figures()
    quiet: list[dict[str, Any]] = []
    storm: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        log(f"round {round_ + 1}: fan-out without logins")
        quiet.append(fanout_run(args, None))
        log(f"round {round_ + 1}: fan-out during {args.rate:g} logins/s")
        storm.append(fanout_run(args, args.rate))
    quiet_p99 = statistics.median(p99(r) for r in quiet)
    storm_p99 = statistics.median(p99(r) for r in storm)
    emit(
        {
            "bench": "storm",
            "db": os.environ.get("DIALTONE_BENCH_DB", "sqlite") or "sqlite",
            "connections": args.connections,
            "senders": args.senders,
            "messages_per_sender": args.messages,
            "login_rate": args.rate,
            "fanout_p99_ms_quiet": quiet_p99,
            "fanout_p99_ms_storm": storm_p99,
            "p99_ratio": round(storm_p99 / quiet_p99, 3) if quiet_p99 else None,
            "quiet": [_short(r) for r in quiet],
            "storm": [_short(r) for r in storm],
            "logins": [r["logins"] for r in storm],
            "storm_covered_send_phase": all(r["storm_covered_send_phase"] for r in storm),
            **machine,
        }
    )


def _short(result: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "deliveries_per_s",
        "deliveries_lost",
        "p50_ms",
        "p99_ms",
        "send_phase_s",
        "generator_cpu_pct",
        "server_cpu_pct",
        "error_events",
    )
    return {key: result.get(key) for key in keys}


if __name__ == "__main__":
    main()
