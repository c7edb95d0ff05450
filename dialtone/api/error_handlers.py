"""The one mapping from exceptions to HTTP ``{"error": ..., "code": ...}`` responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from dialtone.api.edge import printable
from dialtone.db.faults import is_unavailable
from dialtone.errors import DialtoneError, RateLimited, error_body

log = logging.getLogger("dialtone.errors")

# The answer to a database that is away (also sent by the history fast path).
DB_UNAVAILABLE = "database unavailable, try again shortly"
DB_RETRY_AFTER = "5"

_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(
    status: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> Response[Any]:
    return Response(
        content=error_body(message, code, extra),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra
    if isinstance(extra, list) and extra:
        first = extra[0]
        if isinstance(first, dict):
            message = str(first.get("message", "")).strip()
            key = first.get("key")
            if message and key and str(key) not in message:
                return f"{message} ({key})"
            if message:
                return message
    detail = str(exc.detail or "invalid input")
    return detail


def handle_dialtone_error(_: Request[Any, Any, Any], exc: DialtoneError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return error_response(exc.status, exc.message, exc.code, headers, exc.extra)


def handle_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    return error_response(400, _validation_message(exc), "invalid_input")


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        return error_response(status, "internal server error", "server_error")
    message = str(exc.detail) if exc.detail else "request failed"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, message, _CODES.get(status, "error"), headers)


def handle_recursion(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # Only a hostile body nests deep enough to exhaust the decoder's stack.
    log.warning("over-nested input on %s %s", request.method, printable(request.url.path))
    return error_response(400, "JSON is nested too deeply", "invalid_input")


def handle_database(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        printable(request.url.path),
        type(exc).__name__,
    )
    return error_response(503, DB_UNAVAILABLE, "unavailable", {"Retry-After": DB_RETRY_AFTER})


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Any database that is away, starting up, hung (a timeout) or out of storage: the
    # documented 503, never a 500.
    if is_unavailable(exc):
        return handle_database(request, exc)
    log.exception("unhandled error on %s %s", request.method, printable(request.url.path))
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error", "server_error")


exception_handlers: dict[Any, Any] = {
    DialtoneError: handle_dialtone_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    RecursionError: handle_recursion,
    Exception: handle_unexpected,
}
