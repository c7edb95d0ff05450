"""``GET /metrics`` (DIALTONE_METRICS) on a real server process: off by default, behind
the admin credentials on the main port, or on a listener of its own without them; the
series an operator's dashboard reads move with real traffic, and no label carries a
user id, a username, a token or an address."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.conftest import ADMIN_TOKEN, PEPPER, Member, register_member
from tests.http.test_cli import Server, clean_env, free_port, run_server, start
from tests.realtime.conftest import chat_frame, next_of

__all__ = ["start"]  # the fixture, re-used from test_cli

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        DIALTONE_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
        DIALTONE_DATA_DIR=str(tmp_path / "data"),
        DIALTONE_USERNAME_PEPPER=PEPPER.decode(),
        DIALTONE_ADMIN_TOKEN=ADMIN_TOKEN,
        **extra,
    )


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (the parser checks the format)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (n, lbls), value in samples.items() if n == name and wanted <= lbls)


@pytest.fixture
async def http() -> AsyncIterator[list[httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []
    yield clients
    for client in clients:
        await client.aclose()


def client_of(server: Server, clients: list[httpx.AsyncClient]) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=server.base_url, timeout=20)
    clients.append(client)
    return client


def test_metrics_are_off_unless_asked_for(tmp_path: Path, start: list[Server]) -> None:
    server = run_server(start, metrics_env(tmp_path))
    for headers in ({}, {"X-Admin-Token": ADMIN_TOKEN}):
        assert server.http.get("/metrics", headers=headers).status_code == 404


async def test_token_mode_needs_admin_credentials_and_counts_real_traffic(
    tmp_path: Path, start: list[Server], http: list[httpx.AsyncClient]
) -> None:
    server = run_server(
        start,
        metrics_env(
            tmp_path,
            DIALTONE_METRICS="token",
            # One wrong admin token per address, then 429: a rate-limited request.
            DIALTONE_ADMIN_TOKEN_BURST="1",
        ),
    )
    api = client_of(server, http)
    assert (await api.get("/metrics")).status_code == 401
    admin = await register_member(api, "alice")  # the first account is the admin
    member = await register_member(api, "bob")
    assert admin.is_admin
    assert not member.is_admin
    refused = await api.get("/metrics", headers=member.auth)
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_admin"
    by_bearer = await api.get("/metrics", headers=admin.auth)
    assert by_bearer.status_code == 200
    assert by_bearer.headers["content-type"].startswith("text/plain")
    before = parse(by_bearer.text)

    # A login (password hashing), a chat message (a group commit, a fan-out to two
    # sockets), a history read (the fast path), a rate-limited request.
    login = await api.post(
        "/auth/login",
        json={"username": "bob", "password": member.password, "public_key": member.keys.public_b64},
    )
    assert login.status_code == 200, login.text
    channel = (
        await api.post("/channels", json={"name_enc": "bmFtZQ=="}, headers=admin.auth)
    ).json()["channel"]["id"]
    ws_url = server.base_url.replace("http", "ws", 1) + "/ws"
    async with (
        connect(ws_url, additional_headers=admin.auth) as alice_ws,
        connect(ws_url, additional_headers=member.auth) as bob_ws,
    ):
        body = base64.b64encode(b"ciphertext").decode()
        await alice_ws.send(chat_frame(channel, body))
        for ws in (alice_ws, bob_ws):
            assert (await next_of(ws, "channel.message.new", within=20))["body"] == body
        during = parse((await api.get("/metrics", headers={"X-Admin-Token": ADMIN_TOKEN})).text)
    history = await api.get(
        "/channels/messages", params={"channel_id": channel}, headers=admin.auth
    )
    assert history.status_code == 200
    assert [m["body"] for m in history.json()["messages"]] == [body]
    wrong = {"X-Admin-Token": "not-the-admin-token-at-all"}
    assert (await api.get("/admin/stats", headers=wrong)).status_code == 401
    assert (await api.get("/admin/stats", headers=wrong)).status_code == 429

    # Sockets close on the server after the client's close: wait for that to be counted.
    # (The operator token is refused now too, until its address's bucket refills.)
    for _ in range(600):
        text = (await api.get("/metrics", headers=admin.auth)).text
        after = parse(text)
        if total(after, "dialtone_sockets_closed_total", reason="client") >= 2:
            break
        await asyncio.sleep(0.05)

    def moved(name: str, by: float = 1, **labels: str) -> bool:
        return total(after, name, **labels) - total(before, name, **labels) >= by

    assert moved("dialtone_http_requests_total", route="/auth/login", status="200", method="POST")
    assert moved("dialtone_http_requests_total", route="/channels/messages", status="200")
    assert moved("dialtone_http_request_duration_seconds_count", route="/channels/messages")
    assert moved("dialtone_http_requests_total", route="/admin/stats", status="429")
    assert total(after, "dialtone_http_requests_total", route="/metrics", status="403") == 1
    assert moved("dialtone_rate_limited_total", policy="admin_token")
    assert moved("dialtone_password_hash_seconds_count")
    assert moved("dialtone_password_hash_wait_seconds_count")
    assert moved("dialtone_sockets_opened_total", by=2)
    assert moved("dialtone_sockets_closed_total", by=2, reason="client")
    assert moved("dialtone_messages_stored_total")
    assert moved("dialtone_message_batch_size_count")
    assert moved("dialtone_message_batch_commit_seconds_count")
    assert moved("dialtone_fanout_events_total")
    assert moved("dialtone_fanout_deliveries_total", by=2)
    # Read when scraped: both sockets were open during the chat, none are now.
    assert total(during, "dialtone_sockets_open") == 2
    assert total(during, "dialtone_users_online") == 2
    assert total(after, "dialtone_sockets_open") == 0
    assert total(after, "dialtone_db_pool_size") > 0
    assert ("dialtone_password_hash_queue", frozenset({("worker", "0")})) in after
    assert total(after, "dialtone_node_info") == 1

    secrets_of = [admin, member, login.json()]
    assert_no_identifying_labels(text, secrets_of)
    # Every series docs/OPERATIONS.md names (its table and its dashboard's queries) is
    # in the exposition: the dashboard's queries have something to answer.
    documented = set(re.findall(r"\bdialtone_[a-z_]+", OPERATIONS.read_text()))
    exposed = {n for n, _ in after}
    exposed |= {n.rsplit("_", 1)[0] for n in exposed if n.endswith(("_bucket", "_sum", "_count"))}
    missing = documented - exposed
    assert documented
    assert missing == set()


def assert_no_identifying_labels(text: str, members: list[Member | dict[str, object]]) -> None:
    """No label value anywhere in the exposition is a user id, username, token, device id
    or address; an unknown path is "unmatched", never echoed."""
    forbidden: set[str] = {ADMIN_TOKEN}
    for who in members:
        values = who if isinstance(who, dict) else who.__dict__
        for field in ("user_id", "username", "token", "device_id"):
            if isinstance(values.get(field), str):
                forbidden.add(str(values[field]))
    labels = {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert labels
    for value in labels:
        for secret in forbidden:
            assert secret not in value, (secret, value)
        for word in re.findall(r"[0-9a-fA-F:.]+", value):
            try:
                ipaddress.ip_address(word)
            except ValueError:
                continue
            raise AssertionError(f"an address in a label: {value!r}")
    assert not any(value.startswith("/nope") for value in labels)


def test_listener_mode_serves_without_auth_and_not_on_the_main_port(
    tmp_path: Path, start: list[Server]
) -> None:
    port = free_port()
    server = run_server(start, metrics_env(tmp_path, DIALTONE_METRICS=f"127.0.0.1:{port}"))
    assert server.http.get("/metrics", headers={"X-Admin-Token": ADMIN_TOKEN}).status_code == 404
    assert server.http.get("/nope-unknown-path").status_code == 404
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scraped.status_code == 200
    samples = parse(scraped.text)
    # Not routed on the main port: both 404s are "unmatched", neither path is a label.
    assert total(samples, "dialtone_http_requests_total", route="unmatched", status="404") == 2
    assert total(samples, "dialtone_http_requests_total", route="/health", status="200") >= 1
    assert_no_identifying_labels(scraped.text, [])


def test_a_bad_metrics_setting_is_one_line(tmp_path: Path) -> None:
    from tests.http.test_cli import dialtone

    result = dialtone("serve", env=metrics_env(tmp_path, DIALTONE_METRICS="everywhere"))
    assert result.returncode != 0
    assert "DIALTONE_METRICS must be token or an address" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ""), ("off", ""), ("token", "token"), ("127.0.0.1:9100", "127.0.0.1:9100")],
)
def test_metrics_setting(value: str, expected: str) -> None:
    from dialtone.config import load_settings, metrics_address

    env = {"DIALTONE_METRICS": value, "DIALTONE_DATA_DIR": "/nonexistent"}
    assert load_settings(env).metrics == expected
    assert metrics_address("[::1]:9100") == ("::1", 9100)


@pytest.mark.parametrize("value", ["everywhere", ":9100", "127.0.0.1:", "127.0.0.1:99999"])
def test_metrics_setting_refuses_nonsense(value: str) -> None:
    from dialtone.config import load_settings
    from dialtone.errors import ConfigError

    with pytest.raises(ConfigError, match="DIALTONE_METRICS"):
        load_settings({"DIALTONE_METRICS": value, "DIALTONE_DATA_DIR": "/nonexistent"})


def test_each_app_has_its_own_registry() -> None:
    """Nothing is registered globally: two sets of metrics in one process (two apps in
    a test run) count apart, and the default registry holds none of them."""
    from prometheus_client import REGISTRY

    from dialtone.metrics import PrometheusMetrics

    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.fanout(3)
    assert total(parse(first.render().decode()), "dialtone_fanout_deliveries_total") == 3
    assert total(parse(second.render().decode()), "dialtone_fanout_deliveries_total") == 0
    assert REGISTRY.get_sample_value("dialtone_fanout_deliveries_total", {"worker": "0"}) is None


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    from tests.http.test_cli import dialtone

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = dialtone("serve", env=metrics_env(tmp_path, DIALTONE_METRICS=f"127.0.0.1:{port}"))
    assert result.returncode != 0
    assert f"DIALTONE_METRICS: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
