"""Make the generated OpenAPI document tell the truth about errors.

Litestar documents each handler's success response and its own validation-error
shape. Every failure here is ``{"error": ..., "code": ...}`` (one mapping, in
error_handlers.py), so each operation gets that as its ``default`` response, its
400 uses it too, and the rate-limited endpoints document 429 with Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["error"],
    properties={
        "error": Schema(type=OpenAPIType.STRING, description="human-readable reason"),
        "code": Schema(type=OpenAPIType.STRING, description="stable machine-readable code"),
    },
    title="Error",
)
RATE_LIMITED = {
    ("POST", "/auth/login"),
    ("POST", "/auth/register"),
    ("DELETE", "/channels/messages"),
}
# Bodies a handler reads itself (to bound them before decoding), so Litestar cannot see them.
READ_BY_HANDLER = {
    ("PUT", "/keys/backup"): RequestBody(
        required=True,
        content={
            "application/json": OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.OBJECT,
                    required=["backup", "version"],
                    properties={
                        "backup": Schema(
                            type=OpenAPIType.STRING,
                            description="standard base64 of the client-encrypted blob",
                        ),
                        "version": Schema(
                            type=OpenAPIType.INTEGER,
                            minimum=0,
                            description="the version read (0 when there was none)",
                        ),
                    },
                    title="KeyBackupIn",
                )
            )
        },
    )
}
PUBLIC = {("GET", "/health"), ("POST", "/auth/login"), ("POST", "/auth/register")}


def _error(description: str, *, retry_after: bool = False) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] | None = None
    if retry_after:
        headers = {
            "Retry-After": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.INTEGER), description="seconds to wait"
            )
        }
    return OpenAPIResponse(
        description=description,
        content={
            "application/json": OpenAPIMediaType(schema=Reference("#/components/schemas/Error"))
        },
        headers=headers,
    )


def document_errors(openapi: OpenAPI) -> OpenAPI:
    components = openapi.components
    components.schemas = {**(components.schemas or {}), "Error": ERROR_SCHEMA}
    components.security_schemes = {
        **(components.security_schemes or {}),
        "bearer": SecurityScheme(type="http", scheme="bearer"),
    }
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            responses = operation.responses if operation.responses is not None else {}
            if "400" in responses:
                responses["400"] = _error("invalid input")
            responses["default"] = _error("any failure (401, 403, 404, 409, 410, 413, 503, ...)")
            if (method.upper(), path) in RATE_LIMITED:
                responses["429"] = _error("rate limited", retry_after=True)
            if (method.upper(), path) not in PUBLIC:
                operation.security = [{"bearer": []}]
            if (method.upper(), path) in READ_BY_HANDLER:
                operation.request_body = READ_BY_HANDLER[(method.upper(), path)]
            operation.responses = responses
    return openapi


class DocumentedOpenAPI(OpenAPI):
    """Applies document_errors when serialised (Litestar fills paths in after creating it)."""

    def to_schema(self) -> dict[str, Any]:
        document_errors(self)
        return super().to_schema()


@dataclass
class DialtoneOpenAPIConfig(OpenAPIConfig):
    def to_openapi_schema(self) -> OpenAPI:
        base = super().to_openapi_schema()
        return DocumentedOpenAPI(**{f.name: getattr(base, f.name) for f in fields(base)})
