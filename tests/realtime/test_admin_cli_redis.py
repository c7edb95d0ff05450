"""``dialtone admin`` on a Redis deployment: a real process next to a real node, both on
the test Redis (issue 18: the command's broker was made without the cluster secret, so
it did not start wherever DIALTONE_REDIS_URL was set)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from dialtone.config import Settings
from tests.conftest import CLUSTER_SECRET, REDIS_URL
from tests.http.test_admin_cli import Cli
from tests.realtime.conftest import closed_with, next_of, running_server, with_settings


@pytest.fixture
def redis_settings(settings: Settings) -> Settings:
    if not REDIS_URL:
        pytest.skip("needs DIALTONE_TEST_REDIS_URL")
    # A prefix of its own: never hears nor disturbs another test's nodes.
    return with_settings(
        settings, redis_url=REDIS_URL, redis_prefix=f"dialtone-test-{secrets.token_hex(6)}:"
    )


def redis_cli(settings: Settings, data_dir: Path) -> Cli:
    """Run it with ``asyncio.to_thread``: the node serves on this test's event loop (and
    may hold SQLite's write lock for a moment), so the loop must keep turning."""
    cli = Cli(settings.db_url, data_dir)
    assert settings.redis_url is not None
    cli.env.update(
        {
            "DIALTONE_REDIS_URL": settings.redis_url,
            "DIALTONE_REDIS_PREFIX": settings.redis_prefix,
            "DIALTONE_CLUSTER_SECRET": CLUSTER_SECRET,
        }
    )
    return cli


async def test_admin_cli_reaches_a_node_over_redis(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with running_server(redis_settings) as live:
        admin = await live.register("admin")
        member = await live.register("bob")
        ws = await live.connect(member)
        cli = redis_cli(redis_settings, tmp_path)

        users = {u["id"] for u in await asyncio.to_thread(cli.json, "users", "list")}
        assert users == {admin.user_id, member.user_id}

        # A kick from the command line travels as a sealed event: the node accepts it
        # and closes the member's socket at once.
        kicked = await asyncio.to_thread(cli.json, "users", "kick", member.user_id)
        assert kicked == [{"id": member.user_id, "status": "kicked"}]
        code, reason, _ = await closed_with(ws)
        assert (code, reason) == (1008, "kicked")

        # A live setting changed from the command line applies on the node without
        # waiting for its periodic reload.
        watcher = await live.connect(admin)
        await asyncio.to_thread(cli.json, "settings", "set", "welcome_message", "hi from the cli")
        updated = await next_of(watcher, "server.info.updated")
        assert updated["welcome_message"] == "hi from the cli"
        greeter = await live.register("carol")
        hello = await next_of(await live.connect_raw(greeter), "server.hello")
        assert hello["welcome_message"] == "hi from the cli"


async def test_admin_cli_with_a_wrong_cluster_secret_is_not_heard(
    redis_settings: Settings, tmp_path: Path
) -> None:
    """The node drops a batch sealed with another secret: the seal is what is checked."""
    async with running_server(redis_settings) as live:
        await live.register("admin")
        member = await live.register("bob")
        ws = await live.connect(member)
        cli = redis_cli(redis_settings, tmp_path)
        cli.env["DIALTONE_CLUSTER_SECRET"] = "x" * 40
        await asyncio.to_thread(cli.json, "users", "kick", member.user_id)
        # The same command with the right secret, after it: Redis delivers both batches
        # in order, so once this one is applied the kick has been judged (and dropped).
        cli.env["DIALTONE_CLUSTER_SECRET"] = CLUSTER_SECRET
        await asyncio.to_thread(cli.json, "settings", "set", "welcome_message", "sealed right")
        updated = await next_of(ws, "server.info.updated")
        assert updated["welcome_message"] == "sealed right"
        assert ws.close_code is None
