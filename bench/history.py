"""History reads: ``GET /channels/messages?limit=50`` at concurrency 16, req/s and p50/p99.

One channel holds a few thousand messages (seeded straight into the database);
16 keep-alive connections each send the next request as soon as the previous answer
arrived. The load comes from wrk (``--generator wrk``, the default: compiled, one
thread) or from the Python generator spread over ``--procs`` processes. The
generator's CPU share and the server's CPU per request are reported next to req/s.
Usage: ``python bench/history.py [--messages 3000] [--generator wrk|python]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from typing import Any

from common import (
    CpuMeter,
    HttpConnection,
    Job,
    Target,
    add_target_arguments,
    emit,
    log,
    machine_figures,
    register_users,
    run_load,
    run_wrk,
    seed_messages,
    target_from_args,
)


async def prepare(target: Target) -> tuple[str, dict[str, str], Any]:
    (user,) = await register_users(target, 1, 1)
    conn = HttpConnection(target.host, target.port)
    try:
        name_enc = base64.b64encode(os.urandom(32)).decode()
        body = await conn.json("POST", "/channels", {"name_enc": name_enc}, user.auth, expect=201)
    finally:
        await conn.close()
    return body["channel"]["id"], user.auth, user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_target_arguments(parser)
    parser.add_argument("--messages", type=int, default=3000, help="messages seeded first")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--generator", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--procs", type=int, default=2, help="python generator processes")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load")
    args = parser.parse_args()
    machine = machine_figures()
    with target_from_args(args) as target:
        channel_id, auth, user = asyncio.run(prepare(target))
        if target.db_url is None:
            raise SystemExit("with --url, history needs --db-url to seed messages")
        seed_messages(target.db_url, channel_id, user, args.messages)
        log(f"seeded {args.messages} messages")
        path = f"/channels/messages?channel_id={channel_id}&limit={args.limit}"
        server = CpuMeter(target.pid)
        if args.generator == "wrk":
            figures = run_wrk(target, "GET", path, auth, args.concurrency, args.duration, server)
        else:
            figures = run_load(
                Job(
                    host=target.host,
                    port=target.port,
                    method="GET",
                    path=path,
                    headers=auth,
                    connections=args.concurrency,
                    duration=args.duration,
                ),
                args.procs,
                server,
            )
    emit(
        {
            "bench": "history",
            "db": target.db,
            "concurrency": args.concurrency,
            "limit": args.limit,
            "messages": args.messages,
            **figures,
            **machine,
        }
    )


if __name__ == "__main__":
    main()
