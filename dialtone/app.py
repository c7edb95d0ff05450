"""create_app(settings): the one place that wires routes, dependencies, errors and lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import ExitStack, asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialtone import __version__
from dialtone.api.address_bans import address_ban_middleware
from dialtone.api.admin import AdminController
from dialtone.api.auth import AuthController
from dialtone.api.blocks import BlockController
from dialtone.api.channels import ChannelController, MemberController
from dialtone.api.dependencies import provide_ctx, provide_uow
from dialtone.api.devices import DeviceController
from dialtone.api.direct import DirectController
from dialtone.api.edge import DialtoneApp, log_websocket_failure, security_headers
from dialtone.api.error_handlers import exception_handlers
from dialtone.api.files import download_file, upload_file
from dialtone.api.health import health, ready
from dialtone.api.history_fast import PATH as HISTORY_PATH
from dialtone.api.history_fast import HistoryFastPath
from dialtone.api.invites import create_invite
from dialtone.api.key_backups import KeyBackupController
from dialtone.api.keys import (
    ChannelKeyController,
    DirectoryKeyController,
    keys_held,
    set_directory_commitment,
)
from dialtone.api.messages import channel_history
from dialtone.api.metrics import metrics_endpoint
from dialtone.api.moderation import delete_message, deleted_messages, moderators, server_info
from dialtone.api.openapi import DialtoneOpenAPIConfig
from dialtone.api.preferences import PreferenceController
from dialtone.api.presence import presence
from dialtone.api.rotation import rotate_key
from dialtone.api.sync import sync
from dialtone.api.users import UserController
from dialtone.api.voice import turn_credentials
from dialtone.api.web import web_handlers
from dialtone.config import Settings, metrics_address, require_secrets
from dialtone.db.engine import create_engine, create_sessionmaker
from dialtone.db.faults import StorageWatch
from dialtone.metrics import PrometheusMetrics, listener, make_metrics, watch_engine
from dialtone.realtime.admin import AdminEvents
from dialtone.realtime.broker import RedisBroker, broker_for
from dialtone.realtime.gateway import Gateway, ws_endpoint
from dialtone.realtime.hub import Hub
from dialtone.realtime.rooms import load_rooms, load_until_done
from dialtone.schemas.events import Event
from dialtone.services.context import ServerContext
from dialtone.services.maintenance import (
    ADMIN_REFRESH_SECONDS,
    purge_forever,
    refresh_admin_state,
    refresh_forever,
)
from dialtone.services.readiness import Readiness
from dialtone.services.session_cache import SessionCache

log = logging.getLogger("dialtone.app")


async def _reload_rooms(hub: Hub, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    try:
        await load_rooms(hub.rooms, sessionmaker)
    except Exception as exc:
        log.warning("could not reload private rooms: %s", type(exc).__name__)


def create_app(
    settings: Settings, *, worker: int = 0, metrics_dir: str | None = None
) -> DialtoneApp:
    """The ASGI app to serve: the Litestar app (``.litestar``) inside the edge bounds.

    ``worker``/``metrics_dir``: this process's index among DIALTONE_WORKERS and the
    multiprocess metrics folder the parent made (dialtone.workers)."""
    require_secrets(settings)
    broker = broker_for(settings)
    hub = Hub(broker.publish)
    metrics = make_metrics(settings.metrics, worker=worker, multiprocess_dir=metrics_dir)
    ctx = ServerContext.from_settings(
        settings,
        directory=hub,
        # Single node: every revocation passes through this process.
        session_cache=SessionCache() if settings.redis_url is None else None,
    )
    hub.on_admin = AdminEvents(ctx, hub)
    hub.metrics = ctx.limiter.metrics = ctx.hashing.metrics = metrics
    if isinstance(broker, RedisBroker):
        broker.metrics = metrics
    if isinstance(broker, RedisBroker):
        reloads: set[asyncio.Task[None]] = set()

        def on_gap(opened_before: float | None) -> None:
            """Sockets catch up from history; the private-room map, which events keep
            current, may have missed some too: read it again."""
            hub.close_for_catch_up(opened_before)
            sessionmaker = state.get("sessionmaker")
            if sessionmaker is not None:
                task = asyncio.create_task(_reload_rooms(hub, sessionmaker))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

        broker.on_gap = on_gap

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        engine = create_engine(settings)
        storage.attach(engine)  # readiness learns of writes failing for want of storage
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        watch_engine(metrics, engine)
        # Bans and live settings hold before the first request is served (a database
        # that is down now is retried by the refresh loop, as every request retries it).
        try:
            await refresh_admin_state(app.state.sessionmaker, ctx)
        except Exception as exc:
            log.warning("could not load bans and settings yet: %s", type(exc).__name__)
        # Private rooms: subscribe first, then read who is in which (realtime/rooms.py).
        hub.rooms.loading(first=True)
        await broker.start(hub.deliver)
        stop_purging = asyncio.Event()
        try:
            await load_rooms(hub.rooms, app.state.sessionmaker)
        except Exception as exc:
            log.warning("could not load private rooms yet: %s", type(exc).__name__)
        if settings.redis_url:
            await hub.start_replication(settings.node_heartbeat)
        purger = asyncio.create_task(
            purge_forever(app.state.sessionmaker, ctx, settings.purge_interval, stop_purging)
        )
        background = {
            purger,
            asyncio.create_task(
                refresh_forever(app.state.sessionmaker, ctx, ADMIN_REFRESH_SECONDS, stop_purging)
            ),
            asyncio.create_task(ctx.server_log.run(app.state.sessionmaker, stop_purging)),
            asyncio.create_task(state.gateway.slots.run(stop_purging)),
        }
        if not hub.rooms.ready:
            background.add(
                asyncio.create_task(
                    load_until_done(hub.rooms, app.state.sessionmaker, stop_purging)
                )
            )
        if isinstance(metrics, PrometheusMetrics) and metrics.multiprocess_dir:
            background.add(asyncio.create_task(metrics.sample_forever(stop_purging)))
        served_apart = ExitStack()
        # Several workers: the parent serves every worker's values (dialtone.workers).
        if (
            isinstance(metrics, PrometheusMetrics)
            and settings.metrics != "token"
            and not metrics_dir
        ):
            served_apart.enter_context(listener(metrics_address(settings.metrics), metrics.sampled))
        try:
            yield
        finally:
            served_apart.close()
            stop_purging.set()
            # Let a purge in progress finish (bounded by the database timeout).
            _, pending = await asyncio.wait(background, timeout=settings.db_timeout + 1)
            for task in pending:
                task.cancel()
            # Normally done already by DialtoneServer before uvicorn closes sockets itself.
            # Messages already received are stored and answered, then sockets closed
            # (1001), before the engine goes.
            await state.gateway.stop(grace=settings.db_timeout)
            await hub.stop_replication()
            await broker.stop()
            await ctx.limiter.close()
            await state.gateway.slots.close()
            ctx.hashing.close()
            await engine.dispose()

    async def publish(events: Sequence[Event]) -> None:
        await broker.publish(events)

    state = State({"ctx": ctx, "hub": hub, "broker": broker, "publish": publish})
    state.gateway = Gateway(ctx, hub, state)
    state.gateway.writer.metrics = state.metrics = metrics
    metrics.node(hub.node_id, __version__)
    metrics.watch("sockets_open", lambda: len(hub.conns))
    # list(): one atomic copy; the separate listener samples from its own thread.
    metrics.watch("users_online", lambda: len({c.user_id for c in list(hub.conns.values())}))
    metrics.watch("password_hash_queue", lambda: ctx.hashing.pending)
    metrics.watch("message_writer_queue", lambda: state.gateway.writer.waiting)
    if isinstance(broker, RedisBroker):
        metrics.watch("broker_rejected_batches", lambda: broker.dropped)
    storage = StorageWatch()
    state.readiness = Readiness(settings, storage)
    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Admin-Token"],
            max_age=600,
        )
        if settings.cors_origins
        else None
    )
    app = Litestar(
        route_handlers=[
            health,
            AuthController,
            UserController,
            DeviceController,
            ChannelController,
            MemberController,
            DirectController,
            BlockController,
            PreferenceController,
            sync,
            channel_history,
            ChannelKeyController,
            DirectoryKeyController,
            keys_held,
            rotate_key,
            set_directory_commitment,
            KeyBackupController,
            upload_file,
            download_file,
            presence,
            create_invite,
            AdminController,
            delete_message,
            deleted_messages,
            moderators,
            server_info,
            ready,
            turn_credentials,
            ws_endpoint,
            *web_handlers(),
            *([metrics_endpoint] if settings.metrics == "token" else []),
        ],
        dependencies={"uow": Provide(provide_uow), "ctx": Provide(provide_ctx)},
        middleware=[address_ban_middleware(ctx)],
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        state=state,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=DialtoneOpenAPIConfig(title="Dialtone", version=__version__),
        cors_config=cors,
        # dialtone.logs configures logging; Litestar must not install its own handlers.
        logging_config=None,
        debug=False,
        # Public hooks: they see every response Litestar sends (404, 405 and CORS
        # preflights included) and every exception a handler raises.
        before_send=[security_headers(settings)],
        after_exception=[log_websocket_failure],
    )
    served = DialtoneApp(app, settings, ctx.trusted_proxies)
    served.metrics = metrics
    history = HistoryFastPath(state, ctx, hsts=bool(settings.tls_cert))
    served.fast_routes[("GET", HISTORY_PATH)] = history.answer

    def live_cap(new: Settings) -> None:
        # The per-address cap is a live setting (PUT /admin/settings).
        served.cap = new.max_connections_per_address if new.rate_limits else None

    ctx.settings_hooks.append(live_cap)
    return served
