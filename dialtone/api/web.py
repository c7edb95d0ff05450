"""The browser client: `/` and its versioned static files from the `dialtone.web` package.

The files are read once when the app is built and kept in memory (they are small). Their
URLs carry a hash of the whole client (`/static/<hash>/app.js`), so they can be cached for
a year; `/` itself is revalidated on every load and names the current hash.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import PathParameter

from dialtone.errors import NotFound

# The client's own policy: everything from this origin only (WebSocket included: CSP
# Level 3 lets 'self' match ws:/wss: of the same host), no inline script or style.
CLIENT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; media-src 'self' blob:; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
PLACEHOLDER = b"{{static}}"
ReleasePath = Annotated[str, PathParameter(max_length=64)]
FilePath = Annotated[str, PathParameter(max_length=256)]


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _walk(root: Traversable, prefix: str = "") -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for entry in root.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            if not entry.name.startswith(("_", ".")):
                found.update(_walk(entry, f"{name}/"))
        elif not entry.name.startswith(".") and not entry.name.endswith((".py", ".pyc")):
            found[name] = entry.read_bytes()
    return found


def _asset(body: bytes, name: str) -> Asset:
    suffix = name[name.rfind(".") :] if "." in name else ""
    media_type = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def web_handlers() -> list[HTTPRouteHandler]:
    """Route handlers for `/` and `/static/<version>/<path>`."""
    raw = _walk(files("dialtone.web"))
    digest = hashlib.sha256()
    for name in sorted(raw):
        digest.update(name.encode() + b"\0" + raw[name] + b"\0")
    version = digest.hexdigest()[:12]
    index = _asset(
        raw.pop("index.html").replace(PLACEHOLDER, f"/static/{version}".encode()), "i.html"
    )
    assets = {name: _asset(body, name) for name, body in raw.items()}

    def respond(request: Request[Any, Any, Any], asset: Asset, cache: str) -> Response[bytes]:
        headers = {
            "Cache-Control": cache,
            "Content-Security-Policy": CLIENT_CSP,
            "ETag": asset.etag,
        }
        if request.headers.get("if-none-match") == asset.etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    @get("/", include_in_schema=False, sync_to_thread=False)
    def client_page(request: Request[Any, Any, Any]) -> Response[bytes]:
        return respond(request, index, "no-cache")

    @get(
        "/static/{release:str}/{name:path}",
        include_in_schema=False,
        sync_to_thread=False,
    )
    def client_asset(
        request: Request[Any, Any, Any], release: ReleasePath, name: FilePath
    ) -> Response[bytes]:
        asset = assets.get(name.lstrip("/"))
        if release != version or asset is None:
            raise NotFound("no such file")
        return respond(request, asset, IMMUTABLE)

    return [client_page, client_asset]
