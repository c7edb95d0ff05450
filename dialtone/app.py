"""create_app(settings): the one place that wires routes, dependencies, errors and lifespan."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from dialtone import __version__
from dialtone.api.auth import AuthController
from dialtone.api.channels import ChannelController
from dialtone.api.dependencies import provide_ctx, provide_uow
from dialtone.api.devices import DeviceController
from dialtone.api.error_handlers import exception_handlers
from dialtone.api.health import health
from dialtone.api.invites import create_invite
from dialtone.api.keys import ChannelKeyController, DirectoryKeyController
from dialtone.api.messages import channel_history
from dialtone.api.presence import presence
from dialtone.api.users import UserController
from dialtone.api.voice import turn_credentials
from dialtone.config import Settings, require_secrets
from dialtone.db.engine import create_engine, create_sessionmaker
from dialtone.realtime.broker import make_broker
from dialtone.realtime.gateway import Gateway, ws_endpoint
from dialtone.realtime.hub import Hub
from dialtone.schemas.events import Event
from dialtone.services.context import ServerContext


def create_app(settings: Settings) -> Litestar:
    require_secrets(settings)
    ctx = ServerContext.from_settings(settings)
    broker = make_broker(settings.redis_url, settings.redis_prefix)
    hub = Hub(broker.publish)
    ctx.directory = hub

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        await broker.start(hub.deliver)
        if settings.redis_url:
            await hub.start_replication(settings.node_heartbeat)
        try:
            yield
        finally:
            # Normally done already by DialtoneServer before uvicorn closes sockets itself.
            await hub.shutdown()
            await hub.stop_replication()
            await broker.stop()
            await engine.dispose()

    async def publish(events: Sequence[Event]) -> None:
        await broker.publish(events)

    state = State({"ctx": ctx, "hub": hub, "broker": broker, "publish": publish})
    state.gateway = Gateway(ctx, hub, state)
    return Litestar(
        route_handlers=[
            health,
            AuthController,
            UserController,
            DeviceController,
            ChannelController,
            channel_history,
            ChannelKeyController,
            DirectoryKeyController,
            presence,
            create_invite,
            turn_credentials,
            ws_endpoint,
        ],
        dependencies={"uow": Provide(provide_uow), "ctx": Provide(provide_ctx)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        state=state,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Dialtone", version=__version__),
        debug=False,
    )
