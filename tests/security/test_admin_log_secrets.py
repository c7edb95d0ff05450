"""The server log (database) and the process log, scanned after a session of everything
administration logs: no username, password, token, invite or ciphertext appears."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from dialtone.config import Settings
from dialtone.db.models import ServerLogEntry
from tests.conftest import ADMIN_TOKEN, make_settings, register_member
from tests.e2ee import DeviceKeys
from tests.realtime.conftest import chat_frame, closed_with, next_of, running_server

OP = {"X-Admin-Token": ADMIN_TOKEN}


async def test_admin_activity_logs_ids_only(
    tmp_path: Path, db_url: str, json_logs: io.StringIO
) -> None:
    settings: Settings = make_settings(tmp_path, db_url)
    secrets: list[str] = [ADMIN_TOKEN]
    async with running_server(settings) as live:
        admin = await register_member(live.http, "rootsecret71", "Adm1n-secret-pass")
        bob = await register_member(live.http, "spammersecret3", "B0b-secret-pass")
        secrets += [admin.username, bob.username, admin.password, bob.password]
        secrets += [admin.token, bob.token]
        invite = (await live.http.post("/server/invites", json={"max_uses": 2}, headers=OP)).json()
        secrets.append(invite["token"])
        wrong = "Wr0ng-secret-guess"
        secrets.append(wrong)
        await live.http.post(
            "/auth/login",
            json={
                "username": bob.username,
                "password": wrong,
                "public_key": DeviceKeys().public_b64,
            },
        )
        channel = await live.create_channel(admin, "Q0hBTk5FTC1TRUNSRVQtbmFtZQ==")
        body, name = "Qk9EWS1TRUNSRVQtY2lwaGVydGV4dA==", "TkFNRS1TRUNSRVQtY2lwaGVy"
        secrets += [body, name, "Q0hBTk5FTC1TRUNSRVQtbmFtZQ=="]
        ws = await live.connect(bob)
        await ws.send(chat_frame(channel, body, name))
        sent = await next_of(ws, "channel.message.new")
        await ws.send('{"type": "channel.message.send", "body": 42}')  # bad data
        await next_of(ws, "error")
        assert (
            await live.http.delete(
                f"/channels/messages?message_id={sent['message_id']}", headers=admin.auth
            )
        ).status_code == 204
        await live.http.post(f"/admin/users/{bob.user_id}/kick", headers=admin.auth)
        await closed_with(ws)
        await live.http.post(
            "/admin/bans", json={"user_id": bob.user_id, "comment": "spam"}, headers=OP
        )
        await live.http.put("/admin/settings", json={"registration_open": False}, headers=OP)
        await live.http.patch(f"/admin/users/{bob.user_id}", json={"is_locked": True}, headers=OP)
        log_page = (await live.http.get("/admin/log?limit=500", headers=OP)).json()
        topics = {e["topic"] for e in log_page["entries"]}
        assert {
            "register",
            "login_failed",
            "join",
            "leave",
            "bad_data",
            "message_deleted",
            "kick",
            "ban",
            "settings",
            "lock",
            "invite_created",
        } <= topics

    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ServerLogEntry))).all()
    finally:
        await engine.dispose()
    stored = json.dumps([[str(v) for v in row] for row in rows])
    # The test's own websockets client logs its frames and headers: not the server's.
    output = "\n".join(
        line
        for line in json_logs.getvalue().splitlines()
        if json.loads(line).get("logger") != "websockets.client"
    )
    assert len(rows) >= 11
    assert output
    for secret in secrets:
        assert secret not in stored, secret
        assert secret not in output, secret
        assert secret.lower() not in stored.lower(), secret
