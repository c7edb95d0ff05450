"""``GET /metrics`` on the main port (``DIALTONE_METRICS=token``): the Prometheus text
exposition for the operator's ``X-Admin-Token`` or an admin's bearer token (401/403 for
anyone else). Not routed at all otherwise (404). ``DIALTONE_METRICS=host:port`` serves
it on a listener of its own instead (dialtone.metrics.listener)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State

from dialtone.api.dependencies import Ctx, Uow
from dialtone.api.guards import require_admin_credentials
from dialtone.metrics import CONTENT_TYPE, PrometheusMetrics


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(
    request: Request[Any, State, Any], uow: Uow, ctx: Ctx
) -> Response[bytes]:
    await require_admin_credentials(request, uow, ctx)
    metrics: PrometheusMetrics = request.app.state.metrics
    return Response(content=metrics.render(), media_type=CONTENT_TYPE)
