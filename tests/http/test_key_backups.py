"""GET/PUT/DELETE /keys/backup: one opaque blob per user, written by compare-and-swap."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dialtone.config import ConfigError, load_settings
from tests.conftest import ADMIN_TOKEN, Member, app_client, make_settings, register_member
from tests.http.conftest import assert_error
from tests.key_backup import BackupKeys, Secret, make_backup, new_recovery_key, open_backup
from tests.realtime.conftest import running_server

OP = {"X-Admin-Token": ADMIN_TOKEN}


def blob(size: int = 64) -> str:
    return base64.b64encode(os.urandom(size)).decode("ascii")


async def put(client: AsyncTestClient[Any], who: Member, backup: str, version: int) -> Any:
    return await client.put(
        "/keys/backup", json={"backup": backup, "version": version}, headers=who.auth
    )


async def test_no_backup_is_404_then_put_get_and_versions(
    client: AsyncTestClient[Any], admin: Member, member: Member
) -> None:
    assert assert_error(await client.get("/keys/backup", headers=member.auth), 404)["code"] == (
        "no_backup"
    )
    first = blob()
    answer = await put(client, member, first, 0)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"version": 1}
    read = await client.get("/keys/backup", headers=member.auth)
    assert read.status_code == 200
    assert read.json() == {"backup": first, "version": 1}
    second = blob(100)
    assert (await put(client, member, second, 1)).json() == {"version": 2}
    assert (await client.get("/keys/backup", headers=member.auth)).json() == {
        "backup": second,
        "version": 2,
    }
    # Another user's backup is their own.
    assert (await client.get("/keys/backup", headers=admin.auth)).status_code == 404
    assert (await client.get("/keys/backup")).status_code == 401


async def test_a_stale_version_is_409_with_the_current_one(
    client: AsyncTestClient[Any], member: Member
) -> None:
    await put(client, member, blob(), 0)
    await put(client, member, blob(), 1)
    for stale in (0, 1, 3):
        body = assert_error(await put(client, member, blob(), stale), 409)
        assert body["code"] == "backup_conflict"
        assert body["version"] == 2
    assert (await client.get("/keys/backup", headers=member.auth)).json()["version"] == 2


async def test_delete_then_write_from_version_zero(
    client: AsyncTestClient[Any], member: Member
) -> None:
    await put(client, member, blob(), 0)
    deleted = await client.delete("/keys/backup", headers=member.auth)
    assert deleted.status_code == 204
    assert (await client.delete("/keys/backup", headers=member.auth)).status_code == 204
    assert (await client.get("/keys/backup", headers=member.auth)).status_code == 404
    # A writer that still holds version 1 learns there is none now (version 0).
    assert assert_error(await put(client, member, blob(), 1), 409)["version"] == 0
    assert (await put(client, member, blob(), 0)).json() == {"version": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"backup": "not base64!", "version": 0},
        {"backup": "", "version": 0},
        {"backup": "YQ", "version": 0},  # unpadded
        {"backup": "YWJj", "version": -1},
        {"backup": "YWJj"},
        {"backup": "YWJj", "version": 0, "extra": 1},
        {"backup": 5, "version": 0},
        [],
    ],
)
async def test_bad_bodies_are_400(client: AsyncTestClient[Any], member: Member, body: Any) -> None:
    answer = await client.put("/keys/backup", json=body, headers=member.auth)
    assert_error(answer, 400)
    bad_json = await client.put(
        "/keys/backup",
        content=b"{not json",
        headers={**member.auth, "Content-Type": "application/json"},
    )
    assert_error(bad_json, 400)
    assert (await client.get("/keys/backup", headers=member.auth)).status_code == 404


async def test_size_bound_is_413(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, key_backup_max_bytes=2048)
    async with app_client(settings) as client:
        await register_member(client, "admin")
        bob = await register_member(client, "bob")
        assert (await put(client, bob, blob(2048), 0)).status_code == 200
        body = assert_error(await put(client, bob, blob(2049), 1), 413)
        assert body["code"] == "backup_too_large"
        # Far too long: refused by its length, before the body is decoded.
        huge = assert_error(await put(client, bob, "A" * 100_000, 1), 413)
        assert huge["code"] == "backup_too_large"
        assert (await client.get("/keys/backup", headers=bob.auth)).json()["version"] == 1


async def test_the_default_bound_allows_256_kib(
    client: AsyncTestClient[Any], member: Member
) -> None:
    assert (await put(client, member, blob(262144), 0)).status_code == 200
    assert_error(await put(client, member, blob(262145), 1), 413)


async def test_writes_are_rate_limited_per_user(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(
        tmp_path, db_url, rate_limits=True, key_backup_burst=3, key_backup_refill=3600.0
    )
    async with app_client(settings) as client:
        await register_member(client, "admin")
        bob = await register_member(client, "bob")
        carol = await register_member(client, "carol")
        assert (await put(client, bob, blob(), 0)).status_code == 200
        assert (await client.get("/keys/backup", headers=bob.auth)).status_code == 200
        assert (await put(client, bob, blob(), 1)).status_code == 200
        limited = assert_error(await put(client, bob, blob(), 2), 429)
        assert limited["code"] == "rate_limited"
        assert int((await put(client, bob, blob(), 2)).headers["retry-after"]) > 0
        # Per user: another member is not held back.
        assert (await put(client, carol, blob(), 0)).status_code == 200


async def test_deleted_with_the_account(
    client: AsyncTestClient[Any], db_url: str, admin: Member, member: Member
) -> None:
    await put(client, member, blob(), 0)
    await put(client, admin, blob(), 0)
    assert (await client.delete(f"/admin/users/{member.user_id}", headers=OP)).status_code == 200
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT user_id FROM key_backups"))).all()
    finally:
        await engine.dispose()
    assert [row[0] for row in rows] == [admin.user_id]


async def test_the_blob_is_never_logged(
    client: AsyncTestClient[Any], member: Member, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = Secret(recovery_key=new_recovery_key())
    backup = BackupKeys({"c": {"1": os.urandom(32)}})
    sealed = make_backup(backup, secret)
    assert (await put(client, member, sealed, 0)).status_code == 200
    assert (await put(client, member, sealed, 0)).status_code == 409
    read = await client.get("/keys/backup", headers=member.auth)
    assert open_backup(read.json()["backup"], secret) == backup
    # The server's own loggers at debug level (dialtone.logs keeps the database drivers'
    # loggers, which echo statement parameters at debug, at warning).
    # Every field of each record (the access log's are "extra" fields).
    logged = "\n".join(
        f"{r.getMessage()} {r.__dict__}"
        for r in caplog.records
        if r.name.startswith(("dialtone", "litestar"))
    )
    assert "/keys/backup" in logged  # the access log saw the requests
    assert sealed not in logged
    assert sealed[:40] not in logged


def test_settings_are_read_from_the_environment() -> None:
    tuned = load_settings(
        {
            "DIALTONE_KEY_BACKUP_MAX_BYTES": "4096",
            "DIALTONE_KEY_BACKUP_BURST": "7",
            "DIALTONE_KEY_BACKUP_REFILL": "0.5",
        }
    )
    assert (tuned.key_backup_max_bytes, tuned.key_backup_burst) == (4096, 7)
    assert tuned.key_backup_refill == 0.5
    assert load_settings({}).key_backup_max_bytes == 262144
    with pytest.raises(ConfigError, match="DIALTONE_KEY_BACKUP_MAX_BYTES"):
        load_settings({"DIALTONE_KEY_BACKUP_MAX_BYTES": "12"})


async def test_the_schema_documents_the_put_body(
    client: AsyncTestClient[Any], member: Member
) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    body = schema["paths"]["/keys/backup"]["put"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["backup", "version"]


async def test_a_streamed_body_is_cut_off_at_the_bound(tmp_path: Path, db_url: str) -> None:
    """Chunked, with no Content-Length: refused while it streams, over a real socket."""
    settings = make_settings(tmp_path, db_url, key_backup_max_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"backup": "'
        for _ in range(100):
            yield b"A" * 1000
        yield b'", "version": 0}'

    async with running_server(settings) as live:
        await register_member(live.http, "admin")
        bob = await register_member(live.http, "bob")
        answer = await live.http.put(
            "/keys/backup",
            content=chunks(),
            headers={**bob.auth, "Content-Type": "application/json"},
        )
        assert "content-length" not in answer.request.headers
        assert assert_error(answer, 413)["code"] == "backup_too_large"
        assert (await live.http.get("/keys/backup", headers=bob.auth)).status_code == 404
