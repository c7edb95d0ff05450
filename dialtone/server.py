"""Run the app under uvicorn with the protocol choices the benchmarks justify."""

from __future__ import annotations

from typing import Any

import uvicorn

from dialtone.app import create_app
from dialtone.config import Settings


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
        # Liveness pings are sent by the gateway itself (see realtime/gateway.py).
        "ws_ping_interval": None,
        "ws_ping_timeout": None,
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


def serve(settings: Settings) -> None:
    uvicorn.Server(uvicorn_config(settings)).run()
