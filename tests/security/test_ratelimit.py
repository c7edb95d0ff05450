"""Token buckets: the arithmetic, the stores (memory; Redis when configured), and the
HTTP limits on login and registration tripping and recovering."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from dialtone.config import Settings, load_settings
from dialtone.errors import ConfigError
from dialtone.security.addresses import client_address, forwarded_for, limit_key, parse_networks
from dialtone.security.ratelimit import (
    Bucket,
    Limiter,
    LocalBucket,
    MemoryStore,
    RedisStore,
    take,
)
from tests.conftest import ADMIN_TOKEN, REDIS_URL, app_client, make_settings, new_invite
from tests.e2ee import DeviceKeys


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_burst_then_refill() -> None:
    bucket = Bucket.per(3, 10)
    state = None
    for _ in range(3):
        decision, state = take(bucket, state, 0.0)
        assert decision.allowed
    decision, state = take(bucket, state, 0.0)
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(10.0)
    decision, state = take(bucket, state, 5.0)
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(5.0)
    decision, state = take(bucket, state, 10.0)
    assert decision.allowed
    # A long pause refills only up to the burst.
    for _ in range(3):
        decision, state = take(bucket, state, 10_000.0)
        assert decision.allowed
    assert not take(bucket, state, 10_000.0)[0].allowed


def test_local_bucket_for_one_connection() -> None:
    clock = FakeClock()
    messages = LocalBucket(Bucket(capacity=10, rate=5), clock)
    assert all(messages.hit().allowed for _ in range(10))
    refused = messages.hit()
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.2)
    clock.now += 0.2
    assert messages.hit().allowed


async def test_memory_store_charge_and_key_bound() -> None:
    clock = FakeClock()
    store = MemoryStore(max_keys=2, clock=clock)
    bucket = Bucket.per(5, 300)
    assert (await store.hit("a", bucket, 1)).allowed
    await store.charge("a", bucket, 10)  # never below zero
    refused = await store.hit("a", bucket, 1)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(300)
    clock.now += 300
    assert (await store.hit("a", bucket, 1)).allowed
    await store.hit("b", bucket, 1)
    await store.hit("c", bucket, 1)
    assert len(store._state) == 2


async def test_disabled_limiter_allows_everything() -> None:
    limiter = Limiter(MemoryStore(), {"x": Bucket.per(1, 60)}, enabled=False)
    for _ in range(10):
        assert (await limiter.hit("x", "k")).allowed


@pytest.mark.redis
async def test_redis_store_is_shared_and_atomic() -> None:
    if not REDIS_URL:
        pytest.skip("Redis tests need DIALTONE_TEST_REDIS_URL")
    import asyncio

    import redis.asyncio as redis

    prefix = f"dialtone-test-{secrets.token_hex(6)}:"
    first = RedisStore(redis.from_url(REDIS_URL), prefix=prefix)
    second = RedisStore(redis.from_url(REDIS_URL), prefix=prefix)
    bucket = Bucket.per(5, 300)
    try:
        # Two "nodes" hitting one key concurrently: exactly the burst gets through.
        results = await asyncio.gather(
            *[(first if i % 2 else second).hit("k", bucket, 1) for i in range(12)]
        )
        assert sum(r.allowed for r in results) == 5
        refused = [r for r in results if not r.allowed]
        assert all(250 < r.retry_after <= 300 for r in refused)
        await first.charge("other", bucket, 4)
        assert (await second.hit("other", bucket, 1)).allowed
        assert not (await second.hit("other", bucket, 1)).allowed
        await first.charge("other", bucket, -10)  # a refund, capped at the burst
        assert sum([(await second.hit("other", bucket, 1)).allowed for _ in range(6)]) == 5
        # A peek answers as a hit would and takes nothing, on Redis's clock too.
        assert (await first.peek("peeked", bucket, 1)).remaining == 5
        await first.charge("peeked", bucket, 5)
        for _ in range(3):
            assert not (await second.peek("peeked", bucket, 1)).allowed
        await first.charge("peeked", bucket, -1)
        assert (await second.peek("peeked", bucket, 1)).allowed
        assert (await second.hit("peeked", bucket, 1)).allowed
        assert not (await first.peek("peeked", bucket, 1)).allowed
        client = redis.from_url(REDIS_URL)
        ttl = await client.pttl(prefix + "k")
        assert 0 < ttl <= 1_501_000  # keys expire once a bucket would be full again
        await client.delete(prefix + "k", prefix + "other", prefix + "peeked")
        await client.aclose()
    finally:
        await first.close()
        await second.close()


def test_client_address_trusts_only_listed_proxies() -> None:
    proxies = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    # Not from a proxy: the header is ignored.
    assert client_address("203.0.113.9", "1.2.3.4", proxies) == "203.0.113.9"
    # From a proxy: the right-most hop that is not a proxy.
    assert client_address("127.0.0.1", "1.2.3.4, 10.1.1.1", proxies) == "1.2.3.4"
    assert client_address("10.0.0.2", "6.6.6.6, 1.2.3.4", proxies) == "1.2.3.4"
    assert client_address("127.0.0.1", "garbage", proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", None, proxies) == "127.0.0.1"
    assert client_address(None, "1.2.3.4", proxies) == "unknown"
    with pytest.raises(ValueError, match="not an IP"):
        parse_networks(["nope"])


def test_forwarded_for_lines_are_one_chain() -> None:
    proxies = parse_networks(["127.0.0.1"])
    # A client's own line ahead of the proxy's is the left end of one chain.
    lines = ["6.6.6.6", "198.51.100.7"]
    assert client_address("127.0.0.1", lines, proxies) == "198.51.100.7"
    assert client_address("127.0.0.1", ["6.6.6.6, 1.1.1.1", "127.0.0.1"], proxies) == "1.1.1.1"
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    raw = [
        (b"host", b"x"),
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-for", b"198.51.100.7"),
    ]
    assert forwarded_for(raw) == ["6.6.6.6", "198.51.100.7"]


def test_limit_key_groups_ipv6_by_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert limit_key("203.0.113.9") == "203.0.113.9"
    assert limit_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert limit_key("unknown") == "unknown"


async def test_refund_gives_back_up_to_the_burst() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    limiter = Limiter(store, {"x": Bucket.per(2, 60)})
    assert (await limiter.hit("x", "k")).allowed
    await limiter.refund("x", "k")
    await limiter.refund("x", "k")  # never above the burst
    assert (await limiter.hit("x", "k")).allowed
    assert (await limiter.hit("x", "k")).allowed
    assert not (await limiter.hit("x", "k")).allowed


def test_settings_parse_limits() -> None:
    env = {"DIALTONE_RATE_LIMITS": "off", "DIALTONE_TRUSTED_PROXIES": "10.0.0.0/8, ::1"}
    settings = load_settings(env)
    assert settings.rate_limits is False
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1")
    defaults = load_settings({})
    assert defaults.rate_limits is True
    assert (defaults.login_burst, defaults.login_refill) == (5, 300.0)
    assert (defaults.register_burst, defaults.register_refill) == (3, 10.0)
    assert (defaults.ws_chat_burst, defaults.ws_chat_rate) == (10, 5.0)
    assert (defaults.ws_signal_burst, defaults.ws_signal_rate) == (50, 20.0)
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_settings({"DIALTONE_TRUSTED_PROXIES": "example.com"})
    ws = load_settings(
        {
            "DIALTONE_WS_CHAT_BURST": "3",
            "DIALTONE_WS_CHAT_RATE": "0.5",
            "DIALTONE_WS_SIGNAL_BURST": "7",
            "DIALTONE_WS_SIGNAL_RATE": "2",
        }
    )
    assert (ws.ws_chat_burst, ws.ws_chat_rate) == (3, 0.5)
    assert (ws.ws_signal_burst, ws.ws_signal_rate) == (7, 2.0)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DIALTONE_WS_CHAT_BURST", "0"),
        ("DIALTONE_WS_CHAT_BURST", "ten"),
        ("DIALTONE_WS_CHAT_RATE", "-1"),
        ("DIALTONE_WS_SIGNAL_BURST", "2.5"),
        ("DIALTONE_WS_SIGNAL_RATE", "0"),
    ],
)
def test_bad_websocket_limits_give_one_line(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: raw})
    assert name in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- over HTTP


async def _register(client: AsyncTestClient[Any], name: str, **headers: str) -> Any:
    return await client.post(
        "/auth/register",
        json={
            "username": name,
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": await new_invite(client),
        },
        headers=headers,
    )


def _login(name: str, password: str) -> dict[str, str]:
    return {"username": name, "password": password, "public_key": DeviceKeys().public_b64}


async def test_wrong_passwords_get_429(limited_settings: Settings) -> None:
    async with app_client(limited_settings) as client:
        assert (await _register(client, "alice")).status_code == 201
        statuses = []
        for _ in range(30):
            response = await client.post("/auth/login", json=_login("alice", "wrong-pass1"))
            statuses.append(response.status_code)
        # Failures count double: 5 tokens pay for three failures, then 429s.
        assert statuses[:3] == [401, 401, 401]
        assert set(statuses[3:]) == {429}
        response = await client.post("/auth/login", json=_login("alice", "password1"))
        assert response.status_code == 429
        assert response.json()["error"]
        assert response.json()["code"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 300


def with_clock(client: AsyncTestClient[Any]) -> FakeClock:
    """The app's limiter on a clock the test moves (buckets refill without sleeping)."""
    clock = FakeClock()
    client.app.state.ctx.limiter.store = MemoryStore(clock=clock)
    return clock


async def test_login_limit_recovers(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(
        tmp_path, sqlite_url, rate_limits=True, login_burst=2, login_refill=1.0
    )
    async with app_client(settings) as client:
        clock = with_clock(client)
        assert (await _register(client, "alice")).status_code == 201
        assert (
            await client.post("/auth/login", json=_login("alice", "nope1234"))
        ).status_code == 401
        assert (
            await client.post("/auth/login", json=_login("alice", "nope1234"))
        ).status_code == 429
        clock.now += 1.0
        ok = await client.post("/auth/login", json=_login("alice", "password1"))
        assert ok.status_code == 200, ok.text


async def test_login_limit_follows_the_username_across_addresses(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    """Behind a trusted proxy each request comes from a new address; the account's
    ceiling over every address still stops guessing at one account."""
    settings = make_settings(
        tmp_path,
        sqlite_url,
        rate_limits=True,
        trusted_proxies=("127.0.0.1",),
        login_user_burst=6,
    )
    live = await live_factory(settings)
    async with live.client() as http:
        invite = (await http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})).json()
        body = {
            "username": "carol",
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": invite["token"],
        }
        assert (await http.post("/auth/register", json=body)).status_code == 201
        statuses = []
        for i in range(6):
            response = await http.post(
                "/auth/login",
                json=_login("carol", "wrong-pass1"),
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
            )
            statuses.append(response.status_code)
        assert statuses[:3] == [401, 401, 401]
        assert set(statuses[3:]) == {429}
        # Another account from a fresh address is unaffected.
        response = await http.post(
            "/auth/login",
            json=_login("someone", "wrong-pass1"),
            headers={"X-Forwarded-For": "198.51.100.200"},
        )
        assert response.status_code == 401


async def test_forwarded_for_is_ignored_from_untrusted_peers(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    settings = make_settings(tmp_path, sqlite_url, rate_limits=True)
    live = await live_factory(settings)
    async with live.client() as http:
        statuses = []
        for i in range(5):
            response = await http.post(
                "/auth/login",
                json=_login(f"nobody{i}", "wrong-pass1"),
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
            )
            statuses.append(response.status_code)
        # All from 127.0.0.1 whatever the header says: the address bucket runs dry.
        assert statuses == [401, 401, 401, 429, 429]


async def test_register_limit_trips_and_recovers(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, rate_limits=True, register_refill=1.0)
    async with app_client(settings) as client:
        clock = with_clock(client)
        statuses = [(await _register(client, f"user{i}")).status_code for i in range(4)]
        assert statuses == [201, 201, 201, 429]
        # Guessing invites is limited too: a bad invite still spends a token.
        clock.now += 1.0
        bad = await client.post(
            "/auth/register",
            json={
                "username": "guesser",
                "password": "password1",
                "public_key": DeviceKeys().public_b64,
                "invite_token": "not-an-invite",
            },
        )
        assert bad.status_code == 404
        refused = await _register(client, "late")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        clock.now += 1.0
        assert (await _register(client, "later")).status_code == 201


async def test_rate_limits_off(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url)
    assert settings.rate_limits is False
    async with app_client(settings) as client:
        for i in range(6):
            assert (await _register(client, f"user{i}")).status_code == 201
        for _ in range(8):
            response = await client.post("/auth/login", json=_login("user0", "wrong-pass1"))
            assert response.status_code == 401


@pytest.mark.redis
async def test_limits_hold_across_nodes_with_redis(tmp_path: Path, sqlite_url: str) -> None:
    if not REDIS_URL:
        pytest.skip("Redis tests need DIALTONE_TEST_REDIS_URL")
    settings = make_settings(
        tmp_path,
        sqlite_url,
        rate_limits=True,
        redis_url=REDIS_URL,
        redis_prefix=f"dialtone-test-{secrets.token_hex(6)}:",
    )
    async with (
        app_client(settings) as node_a,
        app_client(settings) as node_b,
    ):
        assert (await _register(node_a, "dave")).status_code == 201
        statuses = []
        for i in range(6):
            node = node_a if i % 2 else node_b
            statuses.append(
                (await node.post("/auth/login", json=_login("dave", "bad-pass1"))).status_code
            )
        assert statuses == [401, 401, 401, 429, 429, 429]


async def _live_member(live: Any, name: str) -> None:
    async with live.client() as http:
        invite = (await http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN})).json()
        body = {
            "username": name,
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": invite["token"],
        }
        assert (await http.post("/auth/register", json=body)).status_code == 201


async def test_failures_from_one_address_do_not_lock_out_the_owner(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    settings = make_settings(tmp_path, sqlite_url, rate_limits=True, trusted_proxies=("127.0.0.1",))
    live = await live_factory(settings)
    await _live_member(live, "erin")
    async with live.client() as http:
        stranger = {"X-Forwarded-For": "198.51.100.66"}
        statuses = [
            (
                await http.post("/auth/login", json=_login("erin", "wrong-pass1"), headers=stranger)
            ).status_code
            for _ in range(12)
        ]
        assert statuses[:3] == [401, 401, 401]
        assert set(statuses[3:]) == {429}  # brute force from there is still throttled
        owner = await http.post(
            "/auth/login",
            json=_login("erin", "password1"),
            headers={"X-Forwarded-For": "203.0.113.5"},
        )
        assert owner.status_code == 200, owner.text


async def test_failures_from_many_addresses_do_not_lock_out_the_owner(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    """Issue 18: ~13 addresses failing logins emptied the account's bucket, and the
    owner's right password got 429. The account's buckets now count failures only; once
    the ceiling is spent, an address with no recent failure may still sign in with the
    right password, and every wrong one (from anywhere) gets 429."""
    settings = make_settings(tmp_path, sqlite_url, rate_limits=True, trusted_proxies=("127.0.0.1",))
    live = await live_factory(settings)
    await _live_member(live, "fay")
    async with live.client() as http:

        async def login(password: str, address: str) -> int:
            response = await http.post(
                "/auth/login",
                json=_login("fay", password),
                headers={"X-Forwarded-For": address},
            )
            if response.status_code == 429:
                assert response.json()["code"] == "rate_limited"
                assert int(response.headers["retry-after"]) >= 1
            return response.status_code

        statuses = [
            await login("wrong-pass1", f"198.51.100.{n}") for n in range(1, 14) for _ in range(3)
        ]
        # Each address is stopped after its own three guesses at the latest, and the
        # account's ceiling (50 tokens, two per failure) ends the guessing for everyone.
        assert statuses.count(401) == 25
        assert statuses[-3:] == [429, 429, 429]
        # Failures from a fresh address are refused too: the ceiling holds.
        assert await login("wrong-pass1", "192.0.2.10") == 429
        assert await login("wrong-pass2", "192.0.2.10") == 429
        # The owner, from an address with no recent failure, gets in; more than once.
        assert await login("password1", "203.0.113.5") == 200
        assert await login("password1", "203.0.113.5") == 200
        assert await login("password1", "203.0.113.77") == 200
        # An address that has just failed against the account is held at 429 even with
        # the right password, as is one whose own bucket is spent.
        assert await login("password1", "192.0.2.10") == 429
        assert await login("password1", "198.51.100.1") == 429


async def test_peek_takes_nothing() -> None:
    clock = FakeClock()
    limiter = Limiter(MemoryStore(clock=clock), {"x": Bucket.per(2, 10)})
    fresh = await limiter.peek("x", "k")
    assert fresh.allowed
    assert fresh.remaining == limiter.capacity("x") == 2
    await limiter.charge("x", "k", 2)
    for _ in range(3):
        empty = await limiter.peek("x", "k")
        assert not empty.allowed
        assert empty.retry_after == pytest.approx(10)
    clock.now += 10
    assert (await limiter.peek("x", "k")).remaining == pytest.approx(1)
    assert (await limiter.hit("x", "k")).allowed
    assert not (await limiter.peek("x", "k")).allowed


async def test_forwarded_for_header_lines_cannot_pick_a_fresh_address(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    """A client's own X-Forwarded-For line ahead of the proxy's does not give it a new
    address (and a new bucket) per request."""
    settings = make_settings(tmp_path, sqlite_url, rate_limits=True, trusted_proxies=("127.0.0.1",))
    live = await live_factory(settings)
    async with live.client() as http:
        statuses = []
        for i in range(5):
            response = await http.post(
                "/auth/login",
                json=_login(f"nobody{i}", "wrong-pass1"),
                headers=[
                    ("X-Forwarded-For", f"192.0.2.{i + 1}"),  # the client's forgery
                    ("X-Forwarded-For", "198.51.100.9"),  # what the proxy appended
                ],
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429]


async def test_ipv6_clients_share_a_bucket_per_64(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    settings = make_settings(tmp_path, sqlite_url, rate_limits=True, trusted_proxies=("127.0.0.1",))
    live = await live_factory(settings)
    async with live.client() as http:
        statuses = []
        for i in range(5):
            response = await http.post(
                "/auth/login",
                json=_login(f"nobody{i}", "wrong-pass1"),
                headers={"X-Forwarded-For": f"2001:db8:7:7::{i + 1:x}"},
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        # The next /64 is another subscriber.
        other = await http.post(
            "/auth/login",
            json=_login("nobody9", "wrong-pass1"),
            headers={"X-Forwarded-For": "2001:db8:7:8::1"},
        )
        assert other.status_code == 401


async def test_wrong_admin_tokens_are_limited_and_logged(
    tmp_path: Path, sqlite_url: str, live_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path, sqlite_url, rate_limits=True, trusted_proxies=("127.0.0.1",), admin_token_burst=3
    )
    live = await live_factory(settings)
    guesser = {"X-Forwarded-For": "198.51.100.50"}
    async with live.client() as http:
        # The right token costs nothing, however often it is used.
        for _ in range(5):
            ok = await http.post(
                "/server/invites", headers={**guesser, "X-Admin-Token": ADMIN_TOKEN}
            )
            assert ok.status_code == 201
        caplog.set_level("WARNING", logger="dialtone.security")
        statuses = []
        for i in range(5):
            response = await http.post(
                "/server/invites", headers={**guesser, "X-Admin-Token": f"guess-{i:020d}"}
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        limited = await http.post("/server/invites", headers={**guesser, "X-Admin-Token": "x"})
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        # While limited, even the right token is refused there: a guess cannot be confirmed.
        right = await http.post(
            "/server/invites", headers={**guesser, "X-Admin-Token": ADMIN_TOKEN}
        )
        assert right.status_code == 429
        elsewhere = await http.post(
            "/server/invites",
            headers={"X-Forwarded-For": "203.0.113.1", "X-Admin-Token": ADMIN_TOKEN},
        )
        assert elsewhere.status_code == 201
    rejected = [r for r in caplog.records if getattr(r, "event", None) == "admin_token_rejected"]
    assert len(rejected) == 3
    assert all(getattr(r, "client", None) == "198.51.100.50" for r in rejected)
    assert all("guess-" not in r.getMessage() + str(r.__dict__) for r in rejected)


async def test_connection_cap_counts_an_ipv6_64_as_one_client(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    settings = make_settings(
        tmp_path,
        sqlite_url,
        rate_limits=True,
        trusted_proxies=("127.0.0.1",),
        max_connections_per_address=2,
        request_timeout=120.0,
    )
    live = await live_factory(settings)
    held = []
    for i in (1, 2):  # two requests in flight from two addresses of one /64
        _, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(
            b"POST /auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"x-forwarded-for: 2001:db8:5:5::{i}\r\n".encode()
            + b"content-length: 100\r\n\r\n{"
        )
        await writer.drain()
        held.append(writer)
    try:
        async with live.client() as http:
            third = {"X-Forwarded-For": "2001:db8:5:5:ffff::3"}
            async with asyncio.timeout(60):  # until the server has taken in both
                while (await http.get("/health", headers=third)).status_code != 429:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            other_64 = await http.get("/health", headers={"X-Forwarded-For": "2001:db8:5:6::1"})
            assert other_64.status_code == 200
    finally:
        for writer in held:
            writer.close()


async def test_a_banned_address_cannot_guess_admin_tokens_unlimited(
    tmp_path: Path, sqlite_url: str, live_factory: Any
) -> None:
    """The ban middleware lets the operator's token through; that check must spend the
    same bucket, or a banned address could test guesses (403 wrong, 200 right) forever."""
    settings = make_settings(
        tmp_path, sqlite_url, rate_limits=True, trusted_proxies=("127.0.0.1",), admin_token_burst=3
    )
    live = await live_factory(settings)
    banned = {"X-Forwarded-For": "203.0.113.66"}
    async with live.client() as http:
        op = {"X-Admin-Token": ADMIN_TOKEN, "X-Forwarded-For": "192.0.2.10"}
        ban = await http.post("/admin/bans", json={"address": "203.0.113.66"}, headers=op)
        assert ban.status_code == 201, ban.text
        for i in range(3):
            wrong = await http.get(
                "/admin/bans", headers={**banned, "X-Admin-Token": f"guess-{i:020d}"}
            )
            assert wrong.status_code == 403
        right = await http.get("/admin/bans", headers={**banned, "X-Admin-Token": ADMIN_TOKEN})
        assert right.status_code == 403  # limited: the right token no longer tells
        assert (await http.get("/admin/bans", headers=op)).status_code == 200
