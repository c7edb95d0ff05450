"""``dialtone admin ...`` as a real process on the test database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import ADMIN_TOKEN, PEPPER, Member
from tests.e2ee import DeviceKeys

ROOT = Path(__file__).resolve().parents[2]


class Cli:
    def __init__(self, db_url: str, data_dir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DIALTONE_")}
        self.env.update(
            {
                "DIALTONE_DB_URL": db_url,
                "DIALTONE_DATA_DIR": str(data_dir),
                "DIALTONE_USERNAME_PEPPER": PEPPER.decode(),
                "DIALTONE_ADMIN_TOKEN": ADMIN_TOKEN,
            }
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dialtone", "admin", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


async def test_cli_accounts_and_exit_codes(
    client: AsyncTestClient[Any], admin: Member, member: Member, db_url: str, tmp_path: Path
) -> None:
    cli = Cli(db_url, tmp_path)
    users = {u["id"]: u for u in cli.json("users", "list")}
    assert set(users) == {admin.user_id, member.user_id}
    assert users[admin.user_id]["is_admin"] is True

    table = cli.run("users", "list")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:2] == ["ID", "CREATED_AT"]
    assert "bob" not in table.stdout

    promoted = cli.json("users", "promote", member.user_id)
    assert promoted[0]["is_moderator"] is True
    assert cli.json("users", "list", "--role", "moderator")[0]["id"] == member.user_id
    cli.json("users", "lock", member.user_id)
    login = {"username": "bob", "password": "password1", "public_key": member.keys.public_b64}
    refused = await client.post("/auth/login", json=login)
    assert refused.status_code == 403
    assert refused.json()["code"] == "account_locked"
    assert [u["id"] for u in cli.json("users", "list", "--locked")] == [member.user_id]
    cli.json("users", "unlock", member.user_id)
    assert (await client.post("/auth/login", json=login)).status_code == 200

    last = cli.run("users", "demote", admin.user_id, "--role", "admin")
    assert last.returncode == 1
    assert "last_admin" in last.stderr
    missing = cli.run("users", "lock", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1
    assert "user_not_found" in missing.stderr
    assert cli.run("users", "frobnicate").returncode == 2
    assert cli.run("bans", "add").returncode == 2  # --user or --address is required
    down = Cli("postgresql://postgres@127.0.0.1:9/none", tmp_path).run("users", "list")
    assert down.returncode == 3
    assert "cannot use the database" in down.stderr


async def test_cli_bans_invites_settings_and_log(
    client: AsyncTestClient[Any], admin: Member, member: Member, db_url: str, tmp_path: Path
) -> None:
    cli = Cli(db_url, tmp_path)
    spam = ("--address", "203.0.113.0/24", "--duration", "2h", "--comment", "spam")
    ban = cli.json("bans", "add", *spam)[0]
    assert ban["address"] == "203.0.113.0/24"
    assert ban["created_by"] == "operator"
    user_ban = cli.json("bans", "add", "--user", member.user_id)[0]
    listed = (await client.get("/admin/bans", headers={"X-Admin-Token": ADMIN_TOKEN})).json()
    assert {b["id"] for b in listed["bans"]} == {ban["id"], user_ban["id"]}
    assert len(cli.json("bans", "list", "--active")) == 2
    assert cli.run("bans", "unban", ban["id"]).returncode == 0
    again = cli.run("bans", "remove", ban["id"])
    assert again.returncode == 1
    assert "ban_not_found" in again.stderr

    invite = cli.json("invites", "create", "--max-uses", "2", "--ttl", "1h")[0]
    assert invite["max_uses"] == 2
    registered = await client.post(
        "/auth/register",
        json={
            "username": "carol",
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": invite["token"],
        },
    )
    assert registered.status_code == 201
    shown = cli.run("invites", "list", "--state", "active")
    assert invite["id"] in shown.stdout
    assert invite["token"] not in shown.stdout
    assert cli.run("invites", "revoke", invite["id"]).returncode == 0
    assert cli.json("invites", "list", "--state", "revoked")[0]["id"] == invite["id"]

    assert cli.json("settings", "set", "registration_open", "false") == [
        {"name": "registration_open", "value": False}
    ]
    assert cli.json("settings", "get", "registration_open") == [
        {"name": "registration_open", "value": False}
    ]
    assert cli.json("settings", "set", "server_title", "Harbour")[0]["value"] == "Harbour"
    bad = cli.run("settings", "set", "log_retention_days", "0")
    assert bad.returncode == 1
    assert "invalid_setting" in bad.stderr

    entries = cli.json("log", "--limit", "50")
    topics = [e["topic"] for e in entries]
    assert topics[:3] == ["settings", "settings", "invite_revoked"]
    assert {"ban", "unban", "invite_created", "register"} <= set(topics)
    assert all(e["actor_id"] in ("operator", None) for e in entries if e["topic"] != "register")
    assert cli.json("log", "--topic", "unban")[0]["message"] == f"ban {ban['id']}"
    assert invite["token"] not in json.dumps(entries)
