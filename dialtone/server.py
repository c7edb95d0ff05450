"""Run the app under uvicorn with the protocol choices the benchmarks justify."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from dialtone.app import create_app
from dialtone.config import Settings
from dialtone.realtime.hub import Hub


def uvicorn_config(settings: Settings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "websockets-sansio",
        # Ciphertext does not compress; deflate would only cost memory per socket.
        "ws_per_message_deflate": False,
        "ws_max_size": 64 * 1024,
        # Protocol-level pings (ASGI cannot send them): a peer that does not answer
        # within one interval is dropped, and the gateway sees a disconnect.
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_ping_interval,
        "proxy_headers": False,
        "server_header": False,
        "date_header": True,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 10,
        "h11_max_incomplete_event_size": 16 * 1024,
        "limit_concurrency": 20000,
        "backlog": 4096,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
    }
    if settings.tls_cert and settings.tls_key:
        options["ssl_certfile"] = settings.tls_cert
        options["ssl_keyfile"] = settings.tls_key
    options.update(overrides)
    return uvicorn.Config(create_app(settings), **options)


class DialtoneServer(uvicorn.Server):
    """uvicorn, but sockets are closed by the hub with 1001 (going away) and the voice
    rooms emptied before uvicorn's own shutdown would close them with 1012."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        hub = getattr(getattr(self.config.app, "state", None), "hub", None)
        if isinstance(hub, Hub):
            await hub.shutdown(grace=min(5.0, float(self.config.timeout_graceful_shutdown or 5)))
        await super().shutdown(sockets)


def serve(settings: Settings) -> None:
    DialtoneServer(uvicorn_config(settings)).run()
