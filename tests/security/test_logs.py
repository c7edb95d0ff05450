"""Logs: one structured line per request and per security event, and no secret ever
reaches the output (usernames, passwords, tokens, invites, envelopes, message bodies)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from dialtone.config import Settings
from dialtone.db.engine import create_engine, create_sessionmaker
from dialtone.db.unit_of_work import UnitOfWork
from dialtone.services.context import Caller
from dialtone.services.messages import MessageService
from tests.conftest import ADMIN_TOKEN, app_client, make_settings
from tests.e2ee import DeviceKeys


async def _nothing(_: Any) -> None:
    return None


async def test_no_secret_reaches_the_logs(
    tmp_path: Path, db_url: str, json_logs: io.StringIO
) -> None:
    settings = make_settings(tmp_path, db_url, rate_limits=True)
    secrets_seen: list[str] = []

    def secret(value: str) -> str:
        secrets_seen.append(value)
        return value

    admin_name = secret("rootleak77")
    name = secret("leakyname42")
    password = secret("Pa55word-leak9")
    wrong = secret("Wr0ng-leak-pass")
    envelope = secret("RU5WRUxPUEUtTEVBSy1jaGFubmVs")
    directory_envelope = secret("RElSRUNUT1JZLUxFQUstZW52")
    channel_name = secret("Q0hBTk5FTC1OQU1FLWxlYWs=")
    profile_name = secret("UFJPRklMRS1OQU1FLWxlYWs=")
    body = secret("TUVTU0FHRS1CT0RZLWxlYWstMTIz")
    keys = DeviceKeys()

    async with app_client(settings) as client:
        assert logging.getLogger("litestar").handlers == []  # dialtone's set-up is in force
        admin_invite = secret(
            (await client.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})).json()[
                "token"
            ]
        )
        admin = (
            await client.post(
                "/auth/register",
                json={
                    "username": admin_name,
                    "password": password,
                    "public_key": DeviceKeys().public_b64,
                    "invite_token": admin_invite,
                },
            )
        ).json()
        admin_auth = {"Authorization": f"Bearer {secret(admin['token'])}"}
        invite = secret((await client.post("/server/invites", headers=admin_auth)).json()["token"])
        registered = await client.post(
            "/auth/register",
            json={
                "username": name,
                "password": password,
                "public_key": keys.public_b64,
                "invite_token": invite,
            },
        )
        assert registered.status_code == 201
        member = registered.json()
        auth = {"Authorization": f"Bearer {secret(member['token'])}"}
        # A spent invite, a wrong password (twice: the second trips the limit), a good login.
        again = await client.post(
            "/auth/register",
            json={
                "username": "other1",
                "password": password,
                "public_key": keys.public_b64,
                "invite_token": invite,
            },
        )
        assert again.status_code == 410
        for _ in range(3):
            await client.post(
                "/auth/login",
                json={"username": name, "password": wrong, "public_key": keys.public_b64},
            )
        limited = await client.post(
            "/auth/login", json={"username": name, "password": wrong, "public_key": keys.public_b64}
        )
        assert limited.status_code == 429
        channel = (
            await client.post("/channels", json={"name_enc": channel_name}, headers=admin_auth)
        ).json()["channel"]["id"]
        sender = {"sender_device_id": member["device_id"], "sender_public_key": keys.public_b64}
        ok = await client.post(
            "/channels/keys",
            json={
                "channel_id": channel,
                "envelopes": [{"device_id": member["device_id"], "envelope": envelope, **sender}],
            },
            headers=auth,
        )
        assert ok.status_code == 201
        ok = await client.post(
            "/directory/keys",
            json={
                "envelopes": [
                    {"device_id": member["device_id"], "envelope": directory_envelope, **sender}
                ]
            },
            headers=auth,
        )
        assert ok.status_code == 201
        assert (
            await client.post("/users/profiles", json={"name_enc": profile_name}, headers=auth)
        ).status_code == 201
        assert (
            await client.get("/channels/keys", params={"channel_id": channel}, headers=auth)
        ).status_code == 200

        engine = create_engine(settings)
        try:
            async with UnitOfWork(create_sessionmaker(engine), _nothing) as uow:
                caller = Caller(member["user_id"], member["device_id"], False, True, "x")
                await MessageService(uow, client.app.state.ctx).post(
                    caller, channel, body, profile_name
                )
        finally:
            await engine.dispose()
        history = await client.get(
            "/channels/messages", params={"channel_id": channel}, headers=auth
        )
        assert history.json()["messages"][0]["body"] == body

        # A bad bearer token and an admin token in the wrong place.
        bogus = secret("bogus-token-leak-0123456789")
        assert (
            await client.get("/channels", headers={"Authorization": f"Bearer {bogus}"})
        ).status_code == 401
        assert (
            await client.post("/server/invites", headers={"X-Admin-Token": bogus})
        ).status_code == 401
        second = (
            await client.post(
                "/devices",
                json={"user_id": admin["user_id"], "public_key": DeviceKeys().public_b64},
                headers=admin_auth,
            )
        ).json()
        second["device_id"] = second["id"]
        assert (
            await client.delete(f"/devices/{second['device_id']}", headers=admin_auth)
        ).status_code == 204
        assert (
            await client.post("/auth/logout", params={"all": "1"}, headers=auth)
        ).status_code == 200

    output = json_logs.getvalue()
    for value in [*secrets_seen, ADMIN_TOKEN, keys.public_b64]:
        if value == keys.public_b64:
            continue  # public keys are public
        assert value not in output, f"a secret reached the logs: {value[:6]}…"
        assert value.lower() not in output.lower()

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    requests = [line for line in lines if line["msg"] == "request"]
    assert any(
        r["method"] == "POST" and r["path"] == "/auth/register" and r["status"] == 201
        for r in requests
    )
    assert all("?" not in r["path"] for r in requests)
    history_lines = [r for r in requests if r["path"] == "/channels/messages"]
    assert history_lines[0]["user_id"] == member["user_id"]
    assert history_lines[0]["device_id"] == member["device_id"]
    assert all(isinstance(r["duration_ms"], float | int) for r in requests)
    events = {line.get("event") for line in lines}
    assert {"login_failed", "rate_limited", "device_revoked", "sessions_revoked"} <= events
    failed = [line for line in lines if line.get("event") == "login_failed"]
    assert failed[0]["user_id"] == member["user_id"]


async def test_database_errors_carry_no_bound_parameters(settings: Settings) -> None:
    """A failing statement's error text (which reaches logs and tracebacks) never
    includes the values bound to it: ciphertext, hashes."""
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from dialtone.db.models import User

    marker = "f00d" * 16  # a username hash nobody would write by accident
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(User).values(id="u-one", username_hash=marker))
        with pytest.raises(IntegrityError) as info:
            async with engine.begin() as conn:
                await conn.execute(insert(User).values(id="u-two", username_hash=marker))
    finally:
        await engine.dispose()
    assert marker not in str(info.value)
    assert "u-two" not in str(info.value)
    assert "hidden" in str(info.value)  # SQLAlchemy says the parameters were withheld
