from __future__ import annotations

from litestar import MediaType, get


@get("/health", media_type=MediaType.TEXT, sync_to_thread=False, opt={"skip_log": True})
def health() -> str:
    return "ok"
