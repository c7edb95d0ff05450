"""Typed errors with stable codes; mapped to the wire in exactly one place per transport."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

_encoder = msgspec.json.Encoder()


def error_body(message: str, code: str, extra: Mapping[str, object] | None = None) -> bytes:
    """The JSON body of every refusal, HTTP or WebSocket handshake: ``{"error", "code"}``,
    plus any fields an error documents for its code (``extra``)."""
    if extra:
        return _encoder.encode({"error": message, "code": code, **extra})
    return _encoder.encode({"error": message, "code": code})


class DialtoneError(Exception):
    status: int = 400
    code: str = "invalid_input"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        extra: Mapping[str, object] | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        # Fields documented for this code beside "error" and "code" (e.g. a 409's version).
        self.extra = extra


class InvalidInput(DialtoneError):
    status = 400
    code = "invalid_input"


class Unauthorized(DialtoneError):
    status = 401
    code = "unauthorized"


class Forbidden(DialtoneError):
    status = 403
    code = "forbidden"


class NotFound(DialtoneError):
    status = 404
    code = "not_found"


class Conflict(DialtoneError):
    status = 409
    code = "conflict"


class TooLarge(DialtoneError):
    status = 413
    code = "payload_too_large"


class Gone(DialtoneError):
    status = 410
    code = "gone"


class RateLimited(DialtoneError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DialtoneError):
    status = 503
    code = "unavailable"


class ConfigError(Exception):
    """A bad setting: start-up stops with one clear line."""
