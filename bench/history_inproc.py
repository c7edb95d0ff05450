"""History reads in-process: the app's own CPU per ``GET /channels/messages?limit=50``.

The ASGI app is called directly in a loop (no sockets, no HTTP parser, no load
generator), and the CPU time of this thread is divided by the requests: the steadiest
figure on a shared machine for comparing versions of the history path (run it once
per version, interleaved: ``PYTHONPATH=/tmp/old`` selects an extracted older tree).
It leaves out uvicorn and httptools; bench/history.py measures the whole server.
``DIALTONE_BENCH_DB=postgres`` runs it on a fresh PostgreSQL database.

    python bench/history_inproc.py [--requests 300] [--rounds 7] [--limit 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import ROOT, emit, machine_figures, postgres_database

sys.path.append(str(ROOT))  # tests/ helpers (appended: PYTHONPATH still picks dialtone)


async def measure(db_url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from litestar.testing import AsyncTestClient

    from dialtone.app import create_app
    from dialtone.db.models import ChannelMessage
    from dialtone.db.repositories.messages import MessageRepository
    from tests.conftest import make_settings, register_member

    app = create_app(make_settings(data_dir, db_url))
    async with AsyncTestClient(app=app) as client:
        admin = await register_member(client)
        created = await client.post("/channels", json={"name_enc": "bg=="}, headers=admin.auth)
        channel = created.json()["channel"]["id"]
        start = datetime.now(UTC)
        async with app.state.sessionmaker() as session, session.begin():
            await MessageRepository(session).add_many(
                [
                    ChannelMessage(
                        channel_id=channel,
                        sender_id=admin.user_id,
                        sender_device_id=admin.device_id,
                        sender_name_enc="x" * 64,
                        body="y" * 240,
                        sent_at=start + timedelta(seconds=i),
                    )
                    for i in range(args.messages)
                ]
            )
        path = "/channels/messages"
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": f"channel_id={channel}&limit={args.limit}".encode(),
            "root_path": "",
            "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {admin.token}".encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        statuses: set[int] = set()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.add(message["status"])

        rounds = []
        for _ in range(args.rounds):
            began = time.thread_time()
            for _ in range(args.requests):
                await app({**scope, "state": {}, "extensions": {}}, receive, send)
            rounds.append((time.thread_time() - began) * 1e6 / args.requests)
    if statuses != {200}:
        raise SystemExit(f"unexpected statuses {statuses}")
    return {
        "us_per_request_median": round(statistics.median(rounds), 1),
        "us_per_request_rounds": [round(r, 1) for r in rounds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    from dialtone.config import normalise_db_url
    from dialtone.db.migrate import upgrade

    machine = machine_figures()
    db = os.environ.get("DIALTONE_BENCH_DB", "sqlite")
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dialtone-")))
        if db == "postgres":
            db_url = normalise_db_url(stack.enter_context(postgres_database()))
        else:
            db_url = f"sqlite+aiosqlite:///{data_dir / 'dialtone.db'}"
        upgrade(db_url)
        figures = asyncio.run(measure(db_url, data_dir, args))
    emit({"bench": "history_inproc", "db": db, "limit": args.limit, **figures, **machine})


if __name__ == "__main__":
    main()
