"""Print a test URL for PostgreSQL or Redis when that service answers, else nothing.

Used by `make test` to decide whether the PostgreSQL and Redis tests run.
"""

from __future__ import annotations

import socket
import sys
from urllib.parse import urlsplit


def answers(url: str) -> bool:
    parts = urlsplit(url)
    default = 5432 if parts.scheme.startswith("postgres") else 6379
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default), 1):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    _, kind, url = sys.argv
    if answers(url):
        print(url)
