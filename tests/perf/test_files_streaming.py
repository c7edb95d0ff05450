"""Files through separate server processes: a large upload and download streamed with
the server's memory far below the file's size, and two nodes serving the same file
from one shared files folder."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.conftest import REDIS_URL, truncate_all
from tests.e2ee import open_file, seal_file
from tests.realtime.conftest import next_of
from tests.realtime.test_multinode import Node

MiB = 1024 * 1024
BIG = 64 * MiB
BLOCK = MiB


def rss_kib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the most ever) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def random_body(total: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        block = os.urandom(min(BLOCK, total - sent))
        digest.update(block)
        sent += len(block)
        yield block


async def test_a_large_file_streams_through_in_bounded_memory(db_url: str, tmp_path: Path) -> None:
    node = Node(
        db_url,
        f"dialtone-files-{secrets.token_hex(4)}:",
        tmp_path / "data",
        redis_url="",
        DIALTONE_MAX_FILE_BYTES=str(BIG),
    )
    try:
        await node.ready()
        admin = await node.register("admin")
        created = await node.http.post("/channels", json={"name_enc": "Zm9v"}, headers=admin.auth)
        channel = created.json()["channel"]["id"]
        # Warm every path once, so the measurement sees the transfer, not first imports.
        small = await node.http.post(
            f"/files?channel_id={channel}", content=b"w" * 4096, headers=admin.auth
        )
        assert small.status_code == 201
        await node.http.get(f"/files/{small.json()['id']}", headers=admin.auth)
        before = rss_kib(node.proc.pid, "VmHWM")

        sent = hashlib.sha256()
        response = await node.http.post(
            f"/files?channel_id={channel}",
            content=random_body(BIG, sent),
            headers=admin.auth | {"Content-Length": str(BIG)},
            timeout=300,
        )
        assert response.status_code == 201, response.text
        stored = response.json()
        assert stored["size"] == BIG
        assert stored["sha256"] == sent.hexdigest()

        received = hashlib.sha256()
        size = 0
        async with node.http.stream(
            "GET", f"/files/{stored['id']}", headers=admin.auth, timeout=300
        ) as download:
            assert download.status_code == 200
            async for block in download.aiter_bytes():
                received.update(block)
                size += len(block)
        assert size == BIG
        assert received.hexdigest() == sent.hexdigest()

        grown = rss_kib(node.proc.pid, "VmHWM") - before
        # 64 MiB went in and out; the peak grew by a small fraction of that (~5 MiB measured).
        assert grown * 1024 < BIG // 4, f"peak RSS grew by {grown} KiB"
    finally:
        await node.stop()


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_nodes_serve_the_same_file(pg_database: str, tmp_path: Path) -> None:
    if not REDIS_URL:
        pytest.skip("multi-node test needs DIALTONE_TEST_REDIS_URL")
    await truncate_all(pg_database)
    shared = tmp_path / "shared-files"
    prefix = f"dialtone-test-{secrets.token_hex(6)}:"
    first = Node(pg_database, prefix, tmp_path / "a", DIALTONE_FILES_DIR=str(shared))
    second = Node(pg_database, prefix, tmp_path / "b", DIALTONE_FILES_DIR=str(shared))
    try:
        await first.ready()
        await second.ready()
        admin = await first.register("admin")
        bob = await second.register("bob")
        channel = (
            await first.http.post("/channels", json={"name_enc": "Zm9v"}, headers=admin.auth)
        ).json()["channel"]["id"]
        key, blob = seal_file(os.urandom(2 * MiB))
        stored = (
            await first.http.post(f"/files?channel_id={channel}", content=blob, headers=admin.auth)
        ).json()
        served = await second.http.get(f"/files/{stored['id']}", headers=bob.auth)
        assert served.status_code == 200
        assert len(open_file(key, served.content)) == 2 * MiB
        part = await second.http.get(
            f"/files/{stored['id']}", headers=bob.auth | {"Range": "bytes=100-199"}
        )
        assert part.content == blob[100:200]
        # The message carrying it is sent on one node and deleted on the other: the file
        # goes for both.
        async with connect(
            first.ws_url, additional_headers={"Authorization": f"Bearer {admin.token}"}
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "channel.message.send",
                        "channel_id": channel,
                        "body": "eA==",
                        "sender_name_enc": "bg==",
                        "attachments": [stored["id"]],
                    }
                )
            )
            message = await next_of(ws, "channel.message.new")
        deleted = await second.http.delete(
            f"/channels/messages?message_id={message['message_id']}", headers=admin.auth
        )
        assert deleted.status_code == 204
        for node in (first, second):
            gone = await node.http.get(f"/files/{stored['id']}", headers=bob.auth)
            assert gone.status_code == 404
        assert [p for p in shared.rglob("*") if p.is_file()] == []
    finally:
        await first.stop()
        await second.stop()
