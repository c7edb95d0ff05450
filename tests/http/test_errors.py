"""Junk in, clean JSON errors out: never a 500, never an HTML page."""

from __future__ import annotations

import json
from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import ADMIN_TOKEN, Member
from tests.http.conftest import assert_error

# Every JSON-body endpoint, with a body it would accept apart from auth details.
JSON_ENDPOINTS = [
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/users"),
    ("POST", "/users/profiles"),
    ("POST", "/devices"),
    ("POST", "/channels"),
    ("PATCH", "/channels"),
    ("POST", "/channels/keys"),
    ("POST", "/directory/keys"),
    ("POST", "/presence"),
]


def headers_for(member: Member) -> dict[str, str]:
    return {**member.auth, "X-Admin-Token": ADMIN_TOKEN}


async def send(
    client: AsyncTestClient[Any], method: str, path: str, content: bytes, headers: dict[str, str]
) -> Any:
    return await client.request(
        method, path, content=content, headers={"Content-Type": "application/json", **headers}
    )


async def test_malformed_bodies(client: AsyncTestClient[Any], admin: Member) -> None:
    junk = [
        b"",
        b"{",
        b"not json",
        b"[]",
        b"null",
        b'"string"',
        b"42",
        b'{"a":1}{"b":2}',
        b"\xff\xfe\x00",
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"[" * 100_000 + b"]" * 100_000,  # deep enough to exhaust a recursive decoder
        b'{"name_enc": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"name_enc": "\\ud800"}',  # a lone surrogate
        b'{"username": "\\u0000"}',
        json.dumps({"unknown_field": 1}).encode(),
    ]
    for method, path in JSON_ENDPOINTS:
        headers = headers_for(admin) if path != "/users" else {"X-Admin-Token": ADMIN_TOKEN}
        for content in junk:
            response = await send(client, method, path, content, headers)
            assert_error(response, 400)


async def test_body_over_one_mib(client: AsyncTestClient[Any], admin: Member) -> None:
    content = b'{"name_enc": "' + b"a" * (1024 * 1024) + b'"}'
    for method, path in JSON_ENDPOINTS:
        response = await send(client, method, path, content, headers_for(admin))
        assert_error(response, 413)


async def test_body_just_under_limit_is_not_413(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    # Under 1 MiB, refused for its content (the field is too long), not its size.
    content = b'{"name_enc": "' + b"a" * (1024 * 1024 - 100) + b'"}'
    response = await send(client, "POST", "/channels", content, admin.auth)
    assert_error(response, 400)


async def test_nul_bytes_in_every_string_field(client: AsyncTestClient[Any], admin: Member) -> None:
    key = admin.keys.public_b64
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            "/auth/register",
            {"username": "a\x00b", "password": "p4ssword", "public_key": key, "invite_token": "x"},
        ),
        (
            "POST",
            "/auth/register",
            {"username": "ab", "password": "p4ss\x00word", "public_key": key, "invite_token": "x"},
        ),
        (
            "POST",
            "/auth/register",
            {"username": "ab", "password": "p4ssword", "public_key": key, "invite_token": "\x00"},
        ),
        ("POST", "/auth/login", {"username": "a\x00", "password": "p4ssword", "public_key": key}),
        ("POST", "/auth/login", {"username": "admin", "password": "p\x00", "public_key": key}),
        (
            "POST",
            "/auth/login",
            {"username": "admin", "password": "p4", "public_key": key + "\x00"},
        ),
        ("POST", "/users", {"username": "nul\x00"}),
        ("POST", "/users/profiles", {"name_enc": "\x00"}),
        ("POST", "/devices", {"user_id": admin.user_id, "public_key": "\x00"}),
        ("POST", "/devices", {"user_id": "\x00", "public_key": key}),
        ("POST", "/channels", {"name_enc": "a\x00"}),
        ("PATCH", "/channels", {"channel_id": "\x00", "name_enc": "a"}),
        ("POST", "/presence", {"user_ids": ["\x00"]}),
    ]
    for method, path, body in cases:
        response = await client.request(method, path, json=body, headers=headers_for(admin))
        assert_error(response, 400)


async def test_nul_bytes_in_query_parameters(client: AsyncTestClient[Any], admin: Member) -> None:
    for path in (
        "/channels/messages?channel_id=%00",
        "/channels/messages?channel_id=x&limit=%00",
        "/channels/messages?channel_id=x&before=%00",
        "/channels/keys?channel_id=%00",
        "/devices/keys?user_id=%00",
        "/devices/keys?all=%00",
    ):
        response = await client.get(path, headers=admin.auth)
        assert 400 <= response.status_code < 500, (path, response.text)
        assert_error(response, response.status_code)
    assert_error(await client.delete("/channels?channel_id=%00", headers=admin.auth), 400)


async def test_nul_in_headers(client: AsyncTestClient[Any], admin: Member) -> None:
    response = await client.get("/channels", headers={"Authorization": "Bearer a\x00b"})
    assert_error(response, 401)
    response = await client.post("/server/invites", headers={"X-Admin-Token": "a\x00b"})
    assert_error(response, 401)


async def test_wrong_types(client: AsyncTestClient[Any], admin: Member) -> None:
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/channels", {"name_enc": 1}),
        ("POST", "/channels", {"name_enc": ["a"]}),
        ("POST", "/channels", {"name_enc": {"a": 1}}),
        ("POST", "/presence", {"user_ids": {"a": 1}}),
        ("POST", "/channels/keys", {"channel_id": "x", "envelopes": "nope"}),
        ("POST", "/channels/keys", {"channel_id": "x", "envelopes": [1]}),
        ("POST", "/directory/keys", {"envelopes": [None]}),
        ("POST", "/auth/login", {"username": True, "password": 1, "public_key": None}),
    ]
    for method, path, body in cases:
        response = await client.request(method, path, json=body, headers=admin.auth)
        assert_error(response, 400)


async def test_unknown_route_is_json_404(client: AsyncTestClient[Any]) -> None:
    for path in ("/nope", "/channels/nope", "/auth", "/%00"):
        body = assert_error(await client.get(path), 404)
        assert "<" not in body["error"]


async def test_wrong_method_is_json_405(client: AsyncTestClient[Any], admin: Member) -> None:
    for method, path in (
        ("GET", "/auth/login"),
        ("PUT", "/channels"),
        ("DELETE", "/users/profiles"),
        ("POST", "/health"),
        ("GET", "/server/invites"),
    ):
        assert_error(await client.request(method, path, headers=admin.auth), 405)


async def test_non_json_content_type(client: AsyncTestClient[Any], admin: Member) -> None:
    response = await client.post(
        "/channels",
        content=b"name_enc=abc",
        headers={**admin.auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)


async def test_error_body_has_stable_code(client: AsyncTestClient[Any], member: Member) -> None:
    body = assert_error(
        await client.post("/channels", json={"name_enc": "x"}, headers=member.auth), 403
    )
    assert body == {"error": body["error"], "code": "not_admin"}


async def test_refused_requests_return_their_connections(
    client: AsyncTestClient[Any], member: Member
) -> None:
    """A 401 raised while resolving the caller must not strand a pooled connection."""
    pool = client.app.state.engine.pool
    bad = {"Authorization": "Bearer not-a-session"}
    for _ in range(5):
        assert_error(await client.get("/channels", headers=bad), 401)
        assert_error(await client.post("/channels", json={"name_enc": "x"}, headers=bad), 401)
    assert_error(await client.post("/channels", json={"name_enc": "x"}, headers=member.auth), 403)
    assert pool.checkedout() == 0
