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
from dialtone.config import Settings, require_secrets
from dialtone.db.engine import create_engine, create_sessionmaker
from dialtone.realtime.broker import InMemoryBroker
from dialtone.realtime.hub import Hub
from dialtone.schemas.events import Event
from dialtone.services.context import ServerContext
from dialtone.services.session_cache import SessionCache


def create_app(settings: Settings) -> Litestar:
    require_secrets(settings)
    ctx = ServerContext.from_settings(settings)
    hub = Hub()
    broker = InMemoryBroker()
    ctx.directory = hub
    if settings.redis_url is None:
        # Single node: every revocation passes through this process.
        ctx.session_cache = SessionCache()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        if ctx.session_cache is not None:
            ctx.session_cache.watch(engine)
        await broker.start(hub.deliver)
        try:
            yield
        finally:
            await broker.stop()
            await engine.dispose()

    async def publish(events: Sequence[Event]) -> None:
        await broker.publish(events)

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
        ],
        dependencies={"uow": Provide(provide_uow), "ctx": Provide(provide_ctx)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        state=State({"ctx": ctx, "hub": hub, "broker": broker, "publish": publish}),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Dialtone", version=__version__),
        debug=False,
    )
