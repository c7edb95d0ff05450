"""Every time a client gives is range-checked: a time at the ends of the calendar whose
offset carries it past year 9999 or before year 1 in UTC is a 400 ``invalid_time``,
never a 500 (it used to overflow when normalised to UTC). A crafted cursor, whose
parts are a time and a number, gets the same treatment, and numbers past 64 bits are
refused before they reach the database. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from dialtone.services.pagination import encode_cursor
from tests.conftest import ADMIN_TOKEN, Member
from tests.http.conftest import assert_error

OP = {"X-Admin-Token": ADMIN_TOKEN}

# Past 9999-12-31T23:59:59Z once converted, and before 0001-01-01T00:00:00Z.
OUT_OF_RANGE = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]
# The last and first moments that are still in range, written with an offset.
EDGES = ["9999-12-31T22:59:59-01:00", "0001-01-01T01:00:00+01:00"]


def q(text: str) -> str:
    return quote(text, safe="")


def assert_invalid_time(response: Any) -> None:
    assert assert_error(response, 400)["code"] == "invalid_time"


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
async def test_deletions_feed_since(
    client: AsyncTestClient[Any], admin: Member, channel_id: str, moment: str
) -> None:
    url = f"/channels/messages/deleted?channel_id={channel_id}&since={q(moment)}"
    assert_invalid_time(await client.get(url, headers=admin.auth))


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
async def test_deletions_feed_cursor(
    client: AsyncTestClient[Any], admin: Member, channel_id: str, moment: str
) -> None:
    cursor = encode_cursor(moment, 1)
    url = f"/channels/messages/deleted?channel_id={channel_id}&cursor={cursor}"
    assert_invalid_time(await client.get(url, headers=admin.auth))


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
async def test_ban_expires_at(client: AsyncTestClient[Any], member: Member, moment: str) -> None:
    response = await client.post(
        "/admin/bans", json={"user_id": member.user_id, "expires_at": moment}, headers=OP
    )
    assert_invalid_time(response)
    listed = (await client.get("/admin/bans", headers=OP)).json()
    assert listed["bans"] == []


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
async def test_log_after(client: AsyncTestClient[Any], admin: Member, moment: str) -> None:
    assert_invalid_time(await client.get(f"/admin/log?after={q(moment)}", headers=OP))


@pytest.mark.parametrize("path", ["/admin/users", "/admin/bans", "/admin/invites"])
@pytest.mark.parametrize("moment", OUT_OF_RANGE)
async def test_time_cursors_of_admin_lists(
    client: AsyncTestClient[Any], admin: Member, path: str, moment: str
) -> None:
    cursor = encode_cursor(moment, "00000000-0000-0000-0000-000000000000")
    assert_invalid_time(await client.get(f"{path}?cursor={cursor}", headers=OP))


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 2**64 - 1])
async def test_numbers_in_cursors_past_64_bits(
    client: AsyncTestClient[Any], admin: Member, channel_id: str, number: int
) -> None:
    log_page = await client.get(f"/admin/log?cursor={encode_cursor(number)}", headers=OP)
    assert assert_error(log_page, 400)["code"] == "invalid_cursor"
    cursor = encode_cursor("2026-01-01T00:00:00.000000Z", number)
    url = f"/channels/messages/deleted?channel_id={channel_id}&cursor={cursor}"
    feed = await client.get(url, headers=admin.auth)
    assert assert_error(feed, 400)["code"] == "invalid_cursor"


async def test_times_at_the_edges_of_the_range_still_work(
    client: AsyncTestClient[Any], admin: Member, member: Member, channel_id: str
) -> None:
    """In range once converted: answered as before (the range check is no narrower)."""
    late, early = EDGES
    ban = await client.post(
        "/admin/bans", json={"user_id": member.user_id, "expires_at": late}, headers=OP
    )
    assert ban.status_code == 201, ban.text
    assert ban.json()["expires_at"] == "9999-12-31T23:59:59.000000Z"
    for moment in EDGES:
        feed = await client.get(
            f"/channels/messages/deleted?channel_id={channel_id}&since={q(moment)}",
            headers=admin.auth,
        )
        assert feed.status_code == 200, feed.text
        log = await client.get(f"/admin/log?after={q(moment)}", headers=OP)
        assert log.status_code == 200, log.text
    assert (await client.get(f"/admin/log?after={q(early)}", headers=OP)).json()["entries"]
    for path in ("/admin/users", "/admin/bans", "/admin/invites"):
        cursor = encode_cursor(late, "00000000-0000-0000-0000-000000000000")
        page = await client.get(f"{path}?cursor={cursor}", headers=OP)
        assert page.status_code == 200, page.text
