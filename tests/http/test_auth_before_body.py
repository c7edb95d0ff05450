"""Credentials before the body: a request without valid credentials gets 401 on every
authenticated route whatever its body (malformed JSON, a body of the wrong schema, a
body too big for the route's limits), so no one learns a route's body rules, or makes
the server decode a body, without signing in. Parametrised over the app's own routes:
a route added later is covered unless it is listed as public here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from dialtone.app import create_app
from tests.conftest import Member, make_settings
from tests.http.conftest import assert_error

# Routes that anyone may call (sign-up and sign-in, health, public server information,
# the web client and the API schema pages).
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/health/ready"),
    ("POST", "/auth/login"),
    ("POST", "/auth/register"),
    ("GET", "/server/info"),
    ("GET", "/"),
    ("GET", "/static/{release:str}/{name:path}"),
}

# A well-formed body that matches no route's schema, and a body that is not JSON.
BAD_BODIES = [b'{"no_such_field": [1, 2, 3], "username": 7}', b"{not json", b"[]"]


def routes() -> list[tuple[str, str]]:
    app = create_app(make_settings(Path("/nonexistent"), "sqlite+aiosqlite:///:memory:"))
    found: list[tuple[str, str]] = []
    for route in app.litestar.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/schema"):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                if method not in ("OPTIONS", "HEAD") and (method, route.path) not in PUBLIC:
                    found.append((method, route.path))
    return sorted(found)


ROUTES = routes()


def url_of(path: str) -> str:
    # Path parameters get a plausible id; query parameters are left out on purpose
    # (a missing required parameter must not be answered before the credentials).
    return re.sub(r"\{[^}]+\}", "6a3f1f0e-8c1d-4f57-9d55-3c0b7a1e2f10", path)


def test_the_route_list_is_the_apps() -> None:
    """The parametrisation below sees the admin routes and the member routes."""
    assert ("POST", "/admin/bans") in ROUTES
    assert ("PATCH", "/admin/users/{user_id:str}") in ROUTES
    assert ("PUT", "/admin/settings") in ROUTES
    assert ("POST", "/channels") in ROUTES
    assert ("POST", "/devices") in ROUTES
    assert len(ROUTES) > 30


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@pytest.mark.parametrize("body", BAD_BODIES, ids=["wrong-schema", "not-json", "array"])
async def test_no_credentials_and_a_bad_body_is_401(
    client: AsyncTestClient[Any], admin: Member, method: str, path: str, body: bytes
) -> None:
    headers = {"content-type": "application/json"}
    url = url_of(path)
    for credentials in ({}, {"Authorization": "Bearer not-a-session"}):
        response = await client.request(method, url, content=body, headers=headers | credentials)
        assert assert_error(response, 401)["code"] == "unauthorized", (method, path)
    if path.startswith("/admin") or path in ("/server/invites", "/users"):
        wrong = await client.request(
            method, url, content=body, headers=headers | {"X-Admin-Token": "wrong-" * 8}
        )
        assert assert_error(wrong, 401)["code"] == "invalid_admin_token"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/admin/bans"), ("PATCH", "/admin/users/{user_id:str}"), ("PUT", "/admin/settings")],
)
async def test_a_member_with_a_bad_body_on_an_admin_route_is_403(
    client: AsyncTestClient[Any], member: Member, method: str, path: str
) -> None:
    response = await client.request(
        method, url_of(path), content=BAD_BODIES[0], headers=member.auth
    )
    assert assert_error(response, 403)["code"] in {"not_admin", "not_moderator"}


async def test_with_credentials_the_body_is_still_checked(
    client: AsyncTestClient[Any], admin: Member
) -> None:
    for body in BAD_BODIES:
        response = await client.post(
            "/admin/bans", content=body, headers=admin.auth | {"content-type": "application/json"}
        )
        assert_error(response, 400)
        response = await client.post(
            "/channels", content=body, headers=admin.auth | {"content-type": "application/json"}
        )
        assert_error(response, 400)
