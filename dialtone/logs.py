"""Logging set-up: human-readable text or JSON lines. Never log secrets or ciphertext."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# uvicorn adds an ANSI-coloured copy of its message; it is noise in structured output.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        }
        if extras:
            text += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return text


class NoWireDumps(logging.Filter):
    """Drop the websockets library's debug dumps of headers and frames ("< authorization:
    Bearer ...", "< TEXT '...'"), which uvicorn routes to its own logger: at debug level
    they would carry bearer tokens and ciphertext into the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG or not isinstance(record.msg, str):
            return True
        return not record.msg.startswith(("< ", "> ", "%s ", "< %s", "> %s"))


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(NoWireDumps())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Litestar is created with logging_config=None and uvicorn with log_config=None, so
    # this is the one set-up in force; their loggers propagate here.
    for noisy in (
        "uvicorn.access",
        "sqlalchemy.engine",
        "aiosqlite",
        "asyncio",
        "httpx",
        "httpcore",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
