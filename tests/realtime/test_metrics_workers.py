"""DIALTONE_WORKERS=2 with metrics: one scrape shows every worker's counts (the parent's
listener, and /metrics on the main port answered by whichever worker), and a worker's
open sockets leave the scrape when they close."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import ADMIN_TOKEN, CLUSTER_SECRET, REDIS_URL, truncate_all
from tests.http.test_metrics import assert_no_identifying_labels, parse, total
from tests.realtime.test_workers import (
    established_on,
    free_port,
    open_socket,
    server_env,
    worker_pids,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class MeteredWorkers:
    def __init__(self, db_url: str, data_dir: Path, mode: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.mode = mode
        env = server_env(
            data_dir,
            self.port,
            DIALTONE_DB_URL=db_url,
            DIALTONE_REDIS_URL=REDIS_URL or "",
            DIALTONE_REDIS_PREFIX=f"dialtone-test-{secrets.token_hex(6)}:",
            DIALTONE_CLUSTER_SECRET=CLUSTER_SECRET,
            DIALTONE_WORKERS="2",
            DIALTONE_METRICS=mode if mode == "token" else f"127.0.0.1:{self.metrics_port}",
        )
        self.log = data_dir / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dialtone", "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=20)
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    async def ready(self) -> None:
        for _ in range(600):
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            with suppress(httpx.HTTPError):
                if (await self.http.get("/health")).status_code == 200 and len(
                    worker_pids(self.proc.pid)
                ) == 2:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError("workers did not start")

    async def scrape(self) -> str:
        if self.mode == "token":
            # Answered by whichever worker the kernel gives this connection.
            response = await self.http.get("/metrics", headers={"X-Admin-Token": ADMIN_TOKEN})
            assert response.status_code == 200
            return response.text
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        assert response.status_code == 200
        return response.text

    async def stop(self) -> int:
        await self.http.aclose()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait)


@pytest.fixture(params=["listener", "token"])
async def metered(
    pg_database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[MeteredWorkers]:
    if not REDIS_URL:
        pytest.skip("needs DIALTONE_TEST_REDIS_URL")
    await truncate_all(pg_database)
    server = MeteredWorkers(pg_database, tmp_path, request.param)
    try:
        await server.ready()
        yield server
    finally:
        await server.stop()


async def test_a_scrape_sums_both_workers(metered: MeteredWorkers) -> None:
    from tests.conftest import register_member

    pids = worker_pids(metered.proc.pid)
    member = await register_member(metered.http, "alice")
    # The kernel picks the worker of each connection: open sockets until both hold some.
    # Two connections on each worker: one of them may be the HTTP client's keep-alive
    # connection, so each then holds at least one socket.
    sockets: list[ClientConnection] = []
    try:
        while len(sockets) < 4 or min(established_on(p, metered.port) for p in pids) < 2:
            assert len(sockets) < 200, "the kernel never spread the sockets"
            sockets.append(await open_socket(metered.ws_url, member.token))
        # Gauges are sampled by each worker every second: wait until both report theirs.
        for _ in range(600):
            samples = parse(await metered.scrape())
            per_worker = [
                total(samples, "dialtone_sockets_open", worker=str(index)) for index in (0, 1)
            ]
            if sum(per_worker) == len(sockets):
                break
            await asyncio.sleep(0.05)
        assert sum(per_worker) == len(sockets), per_worker
        assert min(per_worker) > 0, per_worker
        opened = [
            total(samples, "dialtone_sockets_opened_total", worker=str(index)) for index in (0, 1)
        ]
        assert sum(opened) == len(sockets)
        assert min(opened) > 0
        # Each worker is a hub node of its own; the scrape names both.
        assert total(samples, "dialtone_node_info") == 2
        # Through Redis: every worker received the others' socket announcements.
        for index in (0, 1):
            assert total(samples, "dialtone_broker_lag_seconds_count", worker=str(index)) > 0
            assert total(samples, "dialtone_db_pool_size", worker=str(index)) > 0
        if metered.mode != "token":
            # Not routed on the main port when it has a listener of its own.
            main = await metered.http.get("/metrics", headers={"X-Admin-Token": ADMIN_TOKEN})
            assert main.status_code == 404
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))

    # Closed sockets leave the gauge; the counters of opened sockets stay.
    for _ in range(600):
        text = await metered.scrape()
        samples = parse(text)
        if total(samples, "dialtone_sockets_open") == 0:
            break
        await asyncio.sleep(0.05)
    assert total(samples, "dialtone_sockets_open") == 0
    assert total(samples, "dialtone_sockets_opened_total") == len(sockets)
    assert_no_identifying_labels(text, [member])
    assert await metered.stop() == 0
