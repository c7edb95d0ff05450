"""``POST /files`` (raw encrypted bytes in) and ``GET /files/{id}`` (the same bytes out).

The upload handler takes the request itself and no ``data``: Litestar reads no body
before the guards and the service have judged the request by its headers, and then
the body streams from ``request.stream()`` into the storage in blocks.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import PathParameter
from litestar.response import Response, Stream

from dialtone.api.dependencies import CallerDep, Ctx, Uow, provide_caller
from dialtone.api.guards import members
from dialtone.api.params import ChannelIdQuery
from dialtone.db.models import StoredFile
from dialtone.errors import DialtoneError
from dialtone.schemas.common import rfc3339
from dialtone.schemas.files import FileOut
from dialtone.services.files import FileService

FileIdPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]

# A downloaded file is ciphertext: a browser must never render or sniff it, and it
# never changes under its id (the client may keep it).
DOWNLOAD_HEADERS = {
    "Content-Disposition": "attachment",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=31536000, immutable",
    "Accept-Ranges": "bytes",
}
_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")


def file_out(row: StoredFile) -> FileOut:
    return FileOut(id=row.id, size=row.size, sha256=row.sha256, created_at=rfc3339(row.created_at))


def invalid_range(size: int) -> DialtoneError:
    return DialtoneError(
        "the range is not a single satisfiable byte range of this file",
        code="invalid_range",
        status=416,
        extra={"size": size},
    )


def parse_range(header: str, size: int) -> tuple[int, int]:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` → [start, end); anything else, or a
    range outside the file, is a 416."""
    match = _RANGE.match(header.strip())
    if match is None:
        raise invalid_range(size)
    first, last = match.group(1), match.group(2)
    if not first and not last:
        raise invalid_range(size)
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise invalid_range(size)
        return max(0, size - suffix), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        raise invalid_range(size)
    return start, end


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


@post(
    "/files",
    tags=["files"],
    status_code=201,
    dependencies={"caller": Provide(provide_caller)},
    guards=[members],
    # The service enforces the live max_file_bytes against Content-Length before
    # reading, and the storage refuses a body longer than announced.
    request_max_body_size=None,
)
async def upload_file(
    request: Request[Any, Any, State],
    channel_id: ChannelIdQuery,
    uow: Uow,
    ctx: Ctx,
    caller: CallerDep,
) -> FileOut:
    service = FileService(uow, ctx)
    upload = await service.admit(caller, channel_id, request.headers.get("content-length"))
    return file_out(await service.store(caller, upload, request.stream()))


@get(
    "/files/{file_id:str}",
    tags=["files"],
    dependencies={"caller": Provide(provide_caller)},
    guards=[members],
)
async def download_file(
    request: Request[Any, Any, State], file_id: FileIdPath, uow: Uow, ctx: Ctx, caller: CallerDep
) -> Response[Any]:
    row = await FileService(uow, ctx).readable(caller, file_id)
    etag = f'"{row.sha256}"'
    headers = {**DOWNLOAD_HEADERS, "ETag": etag}
    match = request.headers.get("if-none-match")
    if match is not None and _etag_matches(match, etag):
        return Response(content=b"", status_code=304, headers=headers)
    start, end, status = 0, row.size, 200
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if wanted is not None and (if_range is None or if_range.strip() == etag):
        start, end = parse_range(wanted, row.size)
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{row.size}"
    headers["Content-Length"] = str(end - start)
    return Stream(
        ctx.files.open(row.storage_key, start, end),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )
