"""``GET /channels/messages`` answered before Litestar, when the request is the common case.

History reads are the hottest HTTP request. Through Litestar each one pays routing,
signature parsing, three dependencies (one a generator with its cleanup group), an
ORM session (begin, commit, close) and a response object, which together cost more
CPU than reading and encoding the page. This path answers the common request on its
own, from the edge (``DialtoneApp``), and hands every other request to Litestar
untouched, so that Litestar's answer (and its error bodies) stays the only one for
anything unusual:

- the request: exactly ``GET /channels/messages``, no ``Origin`` header (CORS), one
  ``Authorization`` header, and a query string of plain ``name=value`` pairs
  (ASCII, nothing percent-encoded, no ``+``, no repeated or unknown name) with a non-empty
  ``channel_id``/``before``/``after`` of at most 64 characters and a ``limit``
  written as a plain positive number of at most ``PAGE_CHUNK`` (``after_seq``, the
  catch-up cursor, is left to Litestar);
- the channel: public as far as this node's hub knows (``realtime/rooms.py``); history
  of a private room goes to Litestar, which checks membership;
- the caller: known to the session cache, not banned, no last_seen_at write due
  (``services.auth.cached_caller``), and no address ban in force on this node;
- the page: read by ``services.messages.read_history`` (the rules Litestar's handler
  uses) from a driver connection (``db/repositories/history.py``); a rule's refusal
  (unknown channel, bad cursor) or any other database error sends the request on to
  Litestar, which answers it as it always did (the connection is invalidated first),
  but a database that is away, starting up or hung is answered here with Litestar's
  503 (going on would wait for it a second time);
  on SQLite at most ``SQLITE_READS_IN_FLIGHT`` such reads run at once.

The answer has the bytes Litestar would send: the same Struct encoded by msgspec,
``content-type`` and ``content-length`` in that order, then the edge's security
headers (tests/http/test_history_wire.py compares both paths with a recording).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine

from dialtone.api.edge import secure_headers
from dialtone.api.error_handlers import DB_RETRY_AFTER, DB_UNAVAILABLE
from dialtone.db.faults import is_unavailable
from dialtone.db.repositories.history import DriverHistory
from dialtone.db.repositories.messages import PAGE_CHUNK, StoredMessage
from dialtone.errors import DialtoneError, error_body
from dialtone.schemas.messages import MessagePage
from dialtone.security.headers import bearer_token
from dialtone.services.auth import cached_caller
from dialtone.services.context import ServerContext
from dialtone.services.messages import message_out, read_history

log = logging.getLogger("dialtone.http")

PATH = "/channels/messages"
_MAX_ID = 64  # ChannelIdQuery / OptionalIdQuery
_NAMES = frozenset({"channel_id", "limit", "before", "after"})
_encoder = msgspec.json.Encoder()
# SQLite reads run on aiosqlite's threads (one per pooled connection), and each thread
# takes the GIL to hand its rows back. Past about one read per core in flight, more
# threads only queue for the GIL behind the event loop: on 2 cores, 16 reads at once
# cost ~430 µs of CPU per request against ~300 µs with 2 (bench/history.py).
SQLITE_READS_IN_FLIGHT = 2

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


def parse_query(query: bytes) -> dict[str, str] | None:
    """The parameters when the query string is of the plain form this path takes, else None."""
    if not query or not query.isascii() or b"%" in query or b"+" in query:
        return None
    params: dict[str, str] = {}
    for pair in query.decode("ascii").split("&"):
        name, sep, value = pair.partition("=")
        if not sep or name not in _NAMES or name in params:
            return None
        if name == "limit":
            if not value.isdigit() or value[0] == "0":
                return None
            if int(value) > PAGE_CHUNK:
                return None
        elif not value or len(value) > _MAX_ID:
            return None
        params[name] = value
    if "channel_id" not in params or ("before" in params and "after" in params):
        return None
    return params


class HistoryFastPath:
    def __init__(self, state: State, ctx: ServerContext, *, hsts: bool) -> None:
        self.state = state
        self.ctx = ctx
        self.hsts = hsts
        self.sqlite_reads = asyncio.Semaphore(SQLITE_READS_IN_FLIGHT)

    async def answer(self, scope: MutableMapping[str, Any], send: Send) -> bool:
        """True when this request was answered here; False: Litestar must answer it."""
        if scope.get("root_path") or self.ctx.bans.has_address_bans:
            return False
        params = parse_query(scope.get("query_string", b""))
        if params is None:
            return False
        authorization = None
        for name, value in scope["headers"]:
            name = name.lower()
            if name == b"authorization":
                if authorization is not None:
                    return False
                authorization = value.decode("latin-1")
            elif name == b"origin":
                return False
        token = bearer_token(authorization)
        if token is None:
            return False
        caller = cached_caller(self.ctx, token)
        if caller is None:
            return False
        engine: AsyncEngine | None = self.state.get("engine")
        if engine is None or not DriverHistory.supports(engine.dialect.name):
            return False
        channel_id = params["channel_id"]
        # A private room (or any channel before this node knows which rooms are private)
        # is Litestar's: it checks membership, and answers a non-member's request with
        # the same 404 as for a missing channel.
        hub = self.state.get("hub")
        if hub is None or not hub.rooms.ready or channel_id in hub.rooms.members:
            return False
        try:
            if engine.dialect.name == "sqlite":
                async with self.sqlite_reads:
                    rows = await self._read(engine, params)
            else:
                rows = await self._read(engine, params)
        except DialtoneError:
            return False
        except Exception as exc:
            if is_unavailable(exc):
                # The database is away, starting up or hung: Litestar's path would meet
                # it again (a second database timeout for a hung one). The same 503.
                log.warning(
                    "database unavailable on GET %s: %s",
                    PATH,
                    type(exc).__name__,
                    extra={"event": "history_unavailable"},
                )
                await self._unavailable(send)
                return True
            # Litestar's path meets the same fault through SQLAlchemy, which maps it
            # (503 for a database that is away) and tells the session cache.
            log.warning(
                "history fast path fell back: %s",
                type(exc).__name__,
                extra={"event": "history_fallback"},
            )
            return False
        scope["dialtone_caller"] = caller  # the access log's user and device
        body = _encoder.encode(
            MessagePage(
                channel_id=channel_id,
                messages=[message_out(channel_id, row) for row in rows],
            )
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": secure_headers(headers, authenticated=True, hsts=self.hsts),
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True

    async def _unavailable(self, send: Send) -> None:
        body = error_body(DB_UNAVAILABLE, "unavailable")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"retry-after", DB_RETRY_AFTER.encode()),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": secure_headers(headers, authenticated=True, hsts=self.hsts),
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _read(self, engine: AsyncEngine, params: dict[str, str]) -> list[StoredMessage]:
        limit = params.get("limit")
        async with engine.connect() as conn:
            try:
                raw = await conn.get_raw_connection()
                return await read_history(
                    DriverHistory(raw.driver_connection, engine.dialect.name),
                    params["channel_id"],
                    int(limit) if limit is not None else None,
                    params.get("before"),
                    params.get("after"),
                )
            except DialtoneError:
                raise
            except Exception:
                # The driver's own exceptions: SQLAlchemy cannot tell whether the
                # connection survived, so it is not given back to the pool.
                await conn.invalidate()
                raise
