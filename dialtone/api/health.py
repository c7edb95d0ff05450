from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.datastructures import State

from dialtone.services.readiness import Readiness


@get("/health", media_type=MediaType.TEXT, sync_to_thread=False, opt={"skip_log": True})
def health() -> str:
    return "ok"


@get("/health/ready", opt={"skip_log": True})
async def ready(request: Request[Any, State, Any]) -> Response[dict[str, Any]]:
    """Ready for traffic: not draining and able to store (services/readiness.py). A
    node whose cross-node delivery (Redis) is down stays ready, with ``degraded``.

    A load balancer polls this (``/health`` stays the plain liveness check)."""
    state = request.app.state
    if state.hub.shutting_down:
        return _not_ready("draining")
    readiness: Readiness = state.readiness
    report = await readiness.check(state.sessionmaker)
    if report.problem is not None:
        return _not_ready(report.problem)
    body: dict[str, Any] = {"status": "ready"}
    if report.degraded:
        body["degraded"] = report.degraded
    return Response(body, status_code=200)


def _not_ready(reason: str) -> Response[dict[str, Any]]:
    return Response({"status": reason, "error": reason, "code": "not_ready"}, status_code=503)
