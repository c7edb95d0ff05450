"""Password hashing under load: its own bounded pool, low priority, no connection held."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import pytest

from dialtone.config import Settings
from dialtone.errors import RateLimited
from dialtone.services.hashing import HASH_NICE, HashingPool
from tests.realtime.conftest import running_server


def own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def until(check: Any, within: float = 60.0) -> None:
    """Poll a condition; the generous bound only stops a broken run."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


async def test_pool_runs_first_come_first_served_and_refuses_past_its_bound() -> None:
    pool = HashingPool(threads=1, max_pending=3)
    gate = threading.Event()
    order: list[int] = []
    try:
        first = asyncio.ensure_future(pool.run(gate.wait, 60))
        queued = [asyncio.ensure_future(pool.run(order.append, i)) for i in range(2)]
        await until(lambda: pool.pending == 3)
        with pytest.raises(RateLimited) as refused:
            await pool.run(order.append, 99)
        assert refused.value.retry_after == 1
        gate.set()
        assert await first is True
        await asyncio.gather(*queued)
        assert order == [0, 1]
        assert pool.pending == 0
        # Room again once the queue drained.
        await pool.run(order.append, 2)
        assert order == [0, 1, 2]
    finally:
        gate.set()
        pool.close()


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_hashing_threads_run_at_lower_priority_than_the_event_loop() -> None:
    pool = HashingPool(threads=1)
    try:
        loop_nice = own_nice()
        assert await pool.run(own_nice) == min(19, loop_nice + HASH_NICE)
        assert own_nice() == loop_nice
    finally:
        pool.close()


async def test_a_login_waiting_for_its_hash_holds_no_database_connection(
    settings: Settings,
) -> None:
    async with running_server(settings) as live:
        member = await live.register("admin")
        state = live.server.config.app.state  # type: ignore[attr-defined]
        ctx, engine = state.ctx, state.engine
        ctx.hashing = HashingPool(threads=1, max_pending=2)
        gate = threading.Event()
        try:
            busy = asyncio.ensure_future(ctx.hashing.run(gate.wait, 5))
            body = {
                "username": member.username,
                "password": member.password,
                "public_key": member.keys.public_b64,
            }
            login = asyncio.ensure_future(live.http.post("/auth/login", json=body))
            await until(lambda: ctx.hashing.pending == 2)
            # The login looked the user up and now waits for a hashing thread: with its
            # connection back in the pool, a storm of logins cannot starve other requests.
            assert engine.pool.checkedout() == 0
            # A third hash would wait past the bound: answered at once with 429.
            refused = await live.http.post("/auth/login", json=body)
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "1"
            gate.set()
            await busy
            response = await login
            assert response.status_code == 200, response.text
            assert response.json()["device_id"] == member.device_id
        finally:
            gate.set()
            ctx.hashing.close()
