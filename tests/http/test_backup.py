"""`dialtone backup` during traffic, `dialtone restore` onto a fresh data folder, and the
schema checks an upgrade relies on (`dialtone migrate --check`, refusing a newer schema).

The server is a real uvicorn on a real database; the commands are real processes."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dialtone.config import Settings, normalise_db_url
from dialtone.db.migrate import current_revision, newest_revision
from tests.conftest import ADMIN_TOKEN, PEPPER, PG_URL, _pg_admin, make_settings
from tests.http.test_cli import clean_env, free_port
from tests.realtime.conftest import chat_frame, next_of, running_server

ROOT = Path(__file__).resolve().parents[2]
BURST = 400
BACKUP_AFTER = 40  # messages acknowledged before the backup starts


def cli(*args: str, data_dir: Path, db_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialtone", *args],
        env=clean_env(DIALTONE_DATA_DIR=str(data_dir), DIALTONE_DB_URL=db_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_secrets(folder: Path) -> None:
    """The data folder as a first run leaves it: the secrets are files there."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / "username_pepper").write_text(PEPPER.decode() + "\n")
    (folder / "admin_token").write_text(ADMIN_TOKEN + "\n")


@pytest.fixture
def fresh_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database of the same kind to restore into."""
    if db_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'dialtone.db'}"
        return
    base = normalise_db_url(PG_URL)
    name = f"dialtone_restore_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"', base))
    yield base.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', base))


async def history_ids(http: httpx.AsyncClient, token: str, channel_id: str) -> set[str]:
    """Every message of the channel: one page holds them all (BURST < the 500 limit)."""
    response = await http.get(
        "/channels/messages",
        params={"channel_id": channel_id, "limit": "500"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return {m["id"] for m in response.json()["messages"]}


async def test_backup_during_a_burst_restores_onto_a_fresh_folder(
    settings: Settings, tmp_path: Path, fresh_db_url: str
) -> None:
    data = Path(settings.data_dir)
    write_secrets(data)
    backup_dir = tmp_path / "backup"
    acked: list[str] = []
    enough = asyncio.Event()

    async with running_server(settings) as live:
        admin = await live.register("admin")
        bob = await live.register("bob")
        channel = await live.create_channel(admin)
        # An encrypted file, carried by a message: the backup takes its bytes too.
        blob = secrets.token_bytes(200_000)
        uploaded = await live.http.post(
            f"/files?channel_id={channel}", content=blob, headers=admin.auth
        )
        assert uploaded.status_code == 201, uploaded.text
        file_id = uploaded.json()["id"]
        ws = await live.connect(admin)
        await ws.send(
            json.dumps(
                {
                    "type": "channel.message.send",
                    "channel_id": channel,
                    "body": "eA==",
                    "sender_name_enc": "bg==",
                    "attachments": [file_id],
                }
            )
        )
        carrier = (await next_of(ws, "channel.message.new"))["message_id"]

        async def burst() -> None:
            for i in range(BURST):
                body = base64.b64encode(f"message {i}".encode()).decode()
                await ws.send(chat_frame(channel, body))
                # A message is acknowledged when its sender sees it: after the commit.
                event = await next_of(ws, "channel.message.new", within=30)
                acked.append(event["message_id"])
                if len(acked) == BACKUP_AFTER:
                    enough.set()

        sending = asyncio.create_task(burst())
        await enough.wait()
        before = list(acked)
        result = await asyncio.to_thread(
            cli, "backup", str(backup_dir), data_dir=data, db_url=settings.db_url
        )
        await sending
        assert result.returncode == 0, result.stderr
        assert len(acked) == BURST
        # The burst went on while the backup ran: the copy is of one instant in between.
        assert len(before) < BURST

        # A live database is never overwritten by accident.
        refused = await asyncio.to_thread(
            cli, "restore", str(backup_dir), data_dir=data, db_url=settings.db_url
        )
        assert refused.returncode == 2
        assert "--force" in refused.stderr
        assert "Traceback" not in refused.stderr

    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["revision"] == newest_revision()
    assert "username_pepper" in manifest["files"]
    assert any(name.startswith("files/") for name in manifest["files"])
    assert (backup_dir / "username_pepper").stat().st_mode & 0o077 == 0
    for secret in (ADMIN_TOKEN, PEPPER.decode()):
        assert secret not in result.stdout + result.stderr

    fresh = tmp_path / "fresh"
    restored = await asyncio.to_thread(
        cli, "restore", str(backup_dir), data_dir=fresh, db_url=fresh_db_url
    )
    assert restored.returncode == 0, restored.stderr
    assert (fresh / "username_pepper").read_text().strip() == PEPPER.decode()
    assert await asyncio.to_thread(current_revision, fresh_db_url) == newest_revision()

    again = make_settings(fresh, fresh_db_url)
    async with running_server(again) as live:
        ids = await history_ids(live.http, admin.token, channel)
        assert set(before) <= ids, "a message acknowledged before the backup is missing"
        assert carrier in ids
        assert ids <= {*acked, carrier}
        # Sessions made before the backup work; so does a password (the pepper came along).
        channels = await live.http.get("/channels", headers=admin.auth)
        assert channels.status_code == 200
        assert [c["id"] for c in channels.json()["channels"]] == [channel]
        restored_file = await live.http.get(f"/files/{file_id}", headers=bob.auth)
        assert restored_file.status_code == 200
        assert restored_file.content == blob
        login = await live.http.post(
            "/auth/login",
            json={"username": "bob", "password": bob.password, "public_key": bob.keys.public_b64},
        )
        assert login.status_code == 200, login.text
        assert login.json()["user_id"] == bob.user_id


def test_restore_checks_the_backup_and_the_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_secrets(data)
    url = f"sqlite+aiosqlite:///{data / 'dialtone.db'}"
    assert cli("migrate", data_dir=data, db_url=url).returncode == 0
    backup_dir = tmp_path / "backup"
    assert cli("backup", str(backup_dir), data_dir=data, db_url=url).returncode == 0
    # Into a folder that is not empty: refused.
    again = cli("backup", str(backup_dir), data_dir=data, db_url=url)
    assert again.returncode == 2
    assert "not empty" in again.stderr

    # A data folder with another pepper: restoring would orphan its accounts.
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    (other / "username_pepper").write_text("another-pepper-0123456789\n")
    other_url = f"sqlite+aiosqlite:///{other / 'dialtone.db'}"
    refused = cli("restore", str(backup_dir), data_dir=other, db_url=other_url)
    assert refused.returncode == 2
    assert "username_pepper" in refused.stderr
    forced = cli("restore", str(backup_dir), "--force", data_dir=other, db_url=other_url)
    assert forced.returncode == 0, forced.stderr
    assert (other / "username_pepper").read_text().strip() == PEPPER.decode()

    # A damaged copy is refused before anything is touched.
    copy = backup_dir / "dialtone.db"
    raw = bytearray(copy.read_bytes())
    raw[-1] ^= 0xFF
    copy.write_bytes(bytes(raw))
    fresh = tmp_path / "fresh"
    damaged = cli(
        "restore", str(backup_dir), data_dir=fresh, db_url=f"sqlite+aiosqlite:///{fresh / 'd.db'}"
    )
    assert damaged.returncode == 2
    assert "damaged" in damaged.stderr
    assert not (fresh / "d.db").exists()


def test_migrate_check_and_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'dialtone.db'}"
    behind = cli("migrate", "--check", data_dir=data, db_url=url)
    assert behind.returncode == 1, behind.stdout + behind.stderr
    assert "behind" in behind.stdout
    assert not (data / "dialtone.db").exists(), "--check changes nothing"

    assert cli("migrate", data_dir=data, db_url=url).returncode == 0
    current = cli("migrate", "--check", data_dir=data, db_url=url)
    assert current.returncode == 0
    assert newest_revision() in current.stdout  # type: ignore[operator]

    # As a newer version of Dialtone would leave it.
    with sqlite3.connect(data / "dialtone.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    ahead = cli("migrate", "--check", data_dir=data, db_url=url)
    assert ahead.returncode == 3
    assert "9999_from_the_future" in ahead.stdout

    env = clean_env(
        DIALTONE_DATA_DIR=str(data),
        DIALTONE_DB_URL=url,
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
    )
    serve = subprocess.run(
        [sys.executable, "-m", "dialtone", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert serve.returncode == 2
    lines = serve.stderr.strip().splitlines()
    assert len(lines) == 1, serve.stderr
    assert "9999_from_the_future" in lines[0]
    assert "newer version" in lines[0]
