"""Administration on two server processes (one PostgreSQL, one Redis): a change made on
one node holds on the other at once, without a restart."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ADMIN_TOKEN
from tests.e2ee import DeviceKeys
from tests.realtime.conftest import next_of
from tests.realtime.test_multinode import Node, nodes, shared_db  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OP = {"X-Admin-Token": ADMIN_TOKEN}


async def test_settings_and_bans_apply_on_every_node(nodes: tuple[Node, Node]) -> None:
    node_a, node_b = nodes
    admin = await node_a.register("admin")
    bob = await node_a.register("bob")
    on_b = await connect(node_b.ws_url, additional_headers=bob.auth)
    try:
        await next_of(on_b, "device.joined")

        # Settings changed on A: B's sockets hear it and B answers with the new values.
        response = await node_a.http.put(
            "/admin/settings",
            json={"server_title": "Cluster", "registration_open": False},
            headers=admin.auth,
        )
        assert response.status_code == 200, response.text
        updated = await next_of(on_b, "server.info.updated", within=10)
        assert updated["server_title"] == "Cluster"
        info = (await node_b.http.get("/server/info")).json()
        assert info["server_title"] == "Cluster"
        assert info["registration_open"] is False
        invite = (await node_b.http.post("/server/invites", headers=OP)).json()
        refused = await node_b.http.post(
            "/auth/register",
            json={
                "username": "carol",
                "password": "password1",
                "public_key": DeviceKeys().public_b64,
                "invite_token": invite["token"],
            },
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "registration_closed"

        # A ban made on A closes bob's socket on B and B refuses him from then on.
        banned = await node_a.http.post(
            "/admin/bans", json={"user_id": bob.user_id}, headers=OP
        )
        assert banned.status_code == 201
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await on_b.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "banned")
        assert (await node_b.http.get("/channels", headers=bob.auth)).status_code == 403
        with pytest.raises(InvalidStatus) as handshake:
            await connect(node_b.ws_url, additional_headers=bob.auth, open_timeout=5)
        assert handshake.value.response.status_code == 403
        assert json.loads(handshake.value.response.body or b"{}")["code"] == "banned"

        # Lifted on B (applied there before it answers): B lets him in again.
        lifted = await node_b.http.delete(f"/admin/bans/{banned.json()['id']}", headers=OP)
        assert lifted.status_code == 200
        back = await connect(node_b.ws_url, additional_headers=bob.auth)
        await next_of(back, "device.joined")
        await back.close()
    finally:
        await on_b.close()
