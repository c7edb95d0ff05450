from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.datastructures import State
from sqlalchemy import text

log = logging.getLogger("dialtone.health")


@get("/health", media_type=MediaType.TEXT, sync_to_thread=False, opt={"skip_log": True})
def health() -> str:
    return "ok"


@get("/health/ready", opt={"skip_log": True})
async def ready(request: Request[Any, State, Any]) -> Response[dict[str, str]]:
    """Ready for traffic: not draining, the database answers and, on a cluster, Redis.

    A load balancer polls this (``/health`` stays the plain liveness check)."""
    state = request.app.state
    if state.hub.shutting_down:
        return _not_ready("draining")
    try:
        async with state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        return _not_ready("database unavailable")
    redis_url = state.ctx.settings.redis_url
    if redis_url:
        import redis.asyncio as redis

        client = redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            await client.ping()
        except Exception as exc:
            log.warning("readiness: redis check failed: %s", type(exc).__name__)
            return _not_ready("redis unavailable")
        finally:
            await client.aclose()
    return Response({"status": "ready"}, status_code=200)


def _not_ready(reason: str) -> Response[dict[str, str]]:
    return Response({"status": reason, "error": reason, "code": "not_ready"}, status_code=503)
