"""Address bans cannot lock the staff out: only admins ban addresses, never wider than
the minimum prefix, and never over an address a staff member is using (issue 18)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from dialtone.config import Settings
from tests.conftest import ADMIN_TOKEN, REDIS_URL
from tests.realtime.conftest import closed_with, next_of, running_server, with_settings

OP = {"X-Admin-Token": ADMIN_TOKEN}


def at(auth: dict[str, str], address: str) -> dict[str, str]:
    """Headers of a request the trusted proxy (127.0.0.1) forwards from ``address``."""
    return {**auth, "X-Forwarded-For": address}


async def test_moderators_cannot_ban_addresses(settings: Settings) -> None:
    proxied = with_settings(settings, trusted_proxies=("127.0.0.1",))
    async with running_server(proxied) as live:
        admin = await live.register("admin")
        moderator = await live.register("mod")
        member = await live.register("bob")
        made = await live.http.patch(
            f"/admin/users/{moderator.user_id}", json={"is_moderator": True}, headers=OP
        )
        assert made.status_code == 200, made.text
        await live.connect(admin, additional_headers=at(admin.auth, "198.51.100.7"))
        for address in ("0.0.0.0/0", "::/0", "198.51.100.7", "198.51.100.0/24", "192.0.2.1"):
            response = await live.http.post(
                "/admin/bans", json={"address": address}, headers=moderator.auth
            )
            assert response.status_code == 403, (address, response.text)
            assert response.json()["code"] == "not_admin"
        listed = await live.http.get("/admin/bans", headers=OP)
        assert listed.json()["bans"] == []
        # The admin is not locked out; the moderator still bans members.
        fine = await live.http.get("/channels", headers=at(admin.auth, "198.51.100.7"))
        assert fine.status_code == 200
        ban = await live.http.post(
            "/admin/bans", json={"user_id": member.user_id}, headers=moderator.auth
        )
        assert ban.status_code == 201, ban.text


async def test_address_bans_have_a_minimum_prefix(settings: Settings) -> None:
    async with running_server(settings) as live:
        admin = await live.register("admin")
        for body, headers in [
            ({"address": "0.0.0.0/0"}, OP),
            ({"address": "0.0.0.0/0"}, admin.auth),
            ({"address": "::/0"}, OP),
            ({"address": "::ffff:0.0.0.0/96"}, OP),  # 0.0.0.0/0 written as IPv4-mapped
            ({"address": "10.0.0.0/15"}, admin.auth),
            ({"address": "2001:db8::/47"}, admin.auth),
        ]:
            response = await live.http.post("/admin/bans", json=body, headers=headers)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["code"] == "ban_too_wide"
        # The defaults: /16 and /48 are accepted.
        for address in ("10.0.0.0/16", "2001:db8::/48"):
            response = await live.http.post(
                "/admin/bans", json={"address": address}, headers=admin.auth
            )
            assert response.status_code == 201, response.text
        # A live setting, range-checked: /0 can never be allowed.
        for value in (0, 7, 33):
            refused = await live.http.put(
                "/admin/settings", json={"ban_min_prefix_ipv4": value}, headers=OP
            )
            assert refused.status_code == 400
            assert refused.json()["code"] == "invalid_setting"
        changed = await live.http.put(
            "/admin/settings", json={"ban_min_prefix_ipv4": 24}, headers=OP
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["settings"]["ban_min_prefix_ipv4"] == 24
        assert changed.json()["settings"]["ban_min_prefix_ipv6"] == 48
        wide = await live.http.post("/admin/bans", json={"address": "10.1.0.0/16"}, headers=OP)
        assert (wide.status_code, wide.json()["code"]) == (400, "ban_too_wide")
        narrow = await live.http.post("/admin/bans", json={"address": "10.1.0.0/24"}, headers=OP)
        assert narrow.status_code == 201


async def test_no_ban_over_a_staff_members_address(settings: Settings) -> None:
    proxied = with_settings(settings, trusted_proxies=("127.0.0.1",))
    async with running_server(proxied) as live:
        admin = await live.register("admin")
        other_admin = await live.register("ada")
        moderator = await live.register("mod")
        member = await live.register("bob")
        for person, flag in ((other_admin, "is_admin"), (moderator, "is_moderator")):
            made = await live.http.patch(
                f"/admin/users/{person.user_id}", json={flag: True}, headers=OP
            )
            assert made.status_code == 200, made.text
        await live.connect(other_admin, additional_headers=at(other_admin.auth, "198.51.100.7"))
        await live.connect(moderator, additional_headers=at(moderator.auth, "2001:db8:5::9"))
        spammer = await live.connect(member, additional_headers=at(member.auth, "192.0.2.200"))
        here = "203.0.113.5"  # where the banning admin's own request comes from

        async def ban(address: str, headers: dict[str, str]) -> Any:
            return await live.http.post(
                "/admin/bans", json={"address": address}, headers=at(headers, here)
            )

        for address in (
            "198.51.100.7",  # another admin's socket
            "198.51.100.0/24",
            "2001:db8:5::/48",  # a moderator's socket
            "203.0.113.5",  # the banning admin's own address
            "203.0.113.0/24",
        ):
            refused = await ban(address, admin.auth)
            assert refused.status_code == 409, (address, refused.text)
            assert refused.json()["code"] == "staff_address"
        assert (await live.http.get("/admin/bans", headers=OP)).json()["bans"] == []

        # A narrow ban elsewhere still works and shuts the spammer out.
        done = await ban("192.0.2.0/24", admin.auth)
        assert done.status_code == 201, done.text
        code, reason, _ = await closed_with(spammer)
        assert (code, reason) == (1008, "banned")
        shut = await live.http.get("/channels", headers=at(member.auth, "192.0.2.200"))
        assert (shut.status_code, shut.json()["code"]) == (403, "banned")
        for person, address in ((other_admin, "198.51.100.7"), (admin, here)):
            fine = await live.http.get("/channels", headers=at(person.auth, address))
            assert fine.status_code == 200

        # Once the moderator is no longer staff, their address is an ordinary one.
        demoted = await live.http.patch(
            f"/admin/users/{moderator.user_id}", json={"is_moderator": False}, headers=OP
        )
        assert demoted.status_code == 200
        assert (await ban("2001:db8:5::/48", admin.auth)).status_code == 201
        # The operator's token is the way out of every ban and is not held back.
        operator = await ban("198.51.100.0/24", OP)
        assert operator.status_code == 201, operator.text


async def test_staff_sockets_on_another_node_are_protected(settings: Settings) -> None:
    """Two nodes on one database and Redis: a staff socket on node B keeps node A from
    banning its network (its address travels with the presence replication)."""
    if not REDIS_URL:
        pytest.skip("needs DIALTONE_TEST_REDIS_URL")
    shared = with_settings(
        settings,
        trusted_proxies=("127.0.0.1",),
        redis_url=REDIS_URL,
        redis_prefix=f"dialtone-test-{secrets.token_hex(6)}:",
        node_heartbeat=0.2,
    )
    async with running_server(shared) as node_a, running_server(shared) as node_b:
        admin = await node_a.register("admin")
        other_admin = await node_a.register("ada")
        member = await node_a.register("bob")
        made = await node_a.http.patch(
            f"/admin/users/{other_admin.user_id}", json={"is_admin": True}, headers=OP
        )
        assert made.status_code == 200, made.text
        here = "203.0.113.5"  # the banning admin's own address, not in either network
        watching = await node_a.connect(admin, additional_headers=at(admin.auth, here))
        await node_b.connect(other_admin, additional_headers=at(other_admin.auth, "198.51.100.7"))
        await node_b.connect(member, additional_headers=at(member.auth, "192.0.2.200"))
        # B publishes each socket's arrival in order; once A has delivered the member's
        # device.joined, it has applied the staff socket's announcement before it.
        while (await next_of(watching, "device.joined"))["sender"] != member.user_id:
            pass

        refused = await node_a.http.post(
            "/admin/bans",
            json={"address": "198.51.100.0/24"},
            headers=at(admin.auth, here),
        )
        assert (refused.status_code, refused.json()["code"]) == (409, "staff_address")
        # A member's address is no staff address: banned from A, closed on B.
        done = await node_a.http.post(
            "/admin/bans",
            json={"address": "192.0.2.0/24"},
            headers=at(admin.auth, here),
        )
        assert done.status_code == 201, done.text
