"""The client's files over plain HTTP: cache headers, CSP, versioned URLs, nothing else
reachable, everything shipped in the wheel."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import WebServer

WEB = Path(__file__).resolve().parents[2] / "dialtone" / "web"
CLIENT_FILES = sorted(
    p.relative_to(WEB).as_posix()
    for p in WEB.rglob("*")
    if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")
)


@pytest.fixture(scope="module")
def http(server: WebServer) -> httpx.Client:
    with httpx.Client(base_url=server.base, timeout=20) as client:
        yield client


def static_prefix(http: httpx.Client) -> str:
    match = re.search(r'src="(/static/[0-9a-f]{12})/app\.js"', http.get("/").text)
    assert match, "the page loads app.js from a versioned path"
    return match.group(1)


def test_page_is_revalidated_and_locked_down(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
        assert directive in csp
    assert "unsafe" not in csp
    assert "<script>" not in page.text  # no inline script
    assert page.headers["x-content-type-options"] == "nosniff"
    again = http.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    # The API keeps its own, stricter policy.
    api = http.get("/channels")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert api.headers["cache-control"] == "no-store"


def test_every_client_file_is_served_with_a_long_cache(http: httpx.Client) -> None:
    prefix = static_prefix(http)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    assert "app.js" in CLIENT_FILES
    for name in CLIENT_FILES:
        if name == "index.html":
            continue
        response = http.get(f"{prefix}/{name}")
        assert response.status_code == 200, name
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-type"].startswith(types[Path(name).suffix]), name
        assert response.content == (WEB / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "{prefix}/../app.js",
        "{prefix}/..%2f..%2fpyproject.toml",
        "{prefix}/__init__.py",
        "{prefix}/",
        "{prefix}/nothing.js",
        "/static/000000000000/app.js",
        "/static/app.js",
        "/index.html",
    ],
)
def test_nothing_else_is_reachable(http: httpx.Client, path: str) -> None:
    response = http.get(path.format(prefix=static_prefix(http)))
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"


def test_client_loads_nothing_from_another_origin() -> None:
    for name in CLIENT_FILES:
        text = (WEB / name).read_text()
        # The only URL allowed is the SVG namespace, which is a name, not a request.
        others = re.findall(r"https?://[^\s\"')]+", text.replace("http://www.w3.org/2000/svg", ""))
        assert not others, f"{name} refers to {others}"


def test_every_client_file_is_in_the_wheel() -> None:
    package_data = tomllib.loads((WEB.parents[1] / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]["package-data"]
    # Patterns of the web package itself, or of `dialtone` with paths under web/.
    candidates = [(p, "") for p in package_data.get("dialtone.web", [])]
    candidates += [(p, "web/") for p in package_data.get("dialtone", [])]
    for name in CLIENT_FILES:
        # setuptools globs cross "/" only with "**": otherwise compare segment by segment.
        matched = any(
            fnmatch.fnmatch(prefix + name, p)
            and ("**" in p or (prefix + name).count("/") == p.count("/"))
            for p, prefix in candidates
        )
        assert matched, f"{name} is not package data"
