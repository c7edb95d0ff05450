"""Settings an operator changes while the server runs (``/admin/settings``).

The ``DIALTONE_*`` variables give the first-run values; a value stored through the
admin API (table ``server_settings``) wins over them. Every node holds the effective
values in memory: a change is stored, then sent to every node through the broker,
and each node also reloads the table periodically, so all nodes agree without a
restart. Values that mirror a ``Settings`` field (rate limits, invite lifetime, the
per-address cap) are applied by rebuilding ``ctx.settings`` with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from dialtone.config import DAY, IPV4_PREFIXES, IPV6_PREFIXES, Settings
from dialtone.errors import InvalidInput

Value = str | int | float | bool


@dataclass(frozen=True)
class Spec:
    kind: type  # str, int, float or bool
    default: Callable[[Settings], Value]
    minimum: float | None = None
    maximum: float | None = None
    field: str | None = None  # the Settings field it overrides
    doc: str = ""
    choices: tuple[str, ...] | None = None  # a str setting that takes one of these words


SPECS: dict[str, Spec] = {
    "server_title": Spec(str, lambda s: "Dialtone", 1, 100, doc="shown by clients"),
    "welcome_message": Spec(str, lambda s: "", 0, 2000, doc="sent to every socket on connect"),
    "registration_open": Spec(bool, lambda s: True, doc="false: registration refused (403)"),
    "private_rooms": Spec(
        str,
        lambda s: "everyone",
        doc="who may create private rooms: everyone, trusted or admins",
        choices=("everyone", "trusted", "admins"),
    ),
    "invite_ttl_seconds": Spec(int, lambda s: s.invite_ttl, 60, 365 * DAY, "invite_ttl"),
    "invite_max_uses": Spec(int, lambda s: 1, 1, 100_000, doc="default for new invites"),
    "log_retention_days": Spec(int, lambda s: 90, 1, 36_500),
    "message_retention_days": Spec(int, lambda s: 0, 0, 36_500, doc="0 keeps messages forever"),
    "login_burst": Spec(int, lambda s: s.login_burst, 1, 10_000, "login_burst"),
    "login_refill_seconds": Spec(float, lambda s: s.login_refill, 0.001, 86_400, "login_refill"),
    "register_burst": Spec(int, lambda s: s.register_burst, 1, 10_000, "register_burst"),
    "register_refill_seconds": Spec(
        float, lambda s: s.register_refill, 0.001, 86_400, "register_refill"
    ),
    "ws_chat_burst": Spec(int, lambda s: s.ws_chat_burst, 1, 100_000, "ws_chat_burst"),
    "ws_chat_rate": Spec(float, lambda s: s.ws_chat_rate, 0.001, 100_000, "ws_chat_rate"),
    "ws_signal_burst": Spec(int, lambda s: s.ws_signal_burst, 1, 100_000, "ws_signal_burst"),
    "ws_signal_rate": Spec(float, lambda s: s.ws_signal_rate, 0.001, 100_000, "ws_signal_rate"),
    "max_connections_per_address": Spec(
        int, lambda s: s.max_connections_per_address, 1, 1_000_000, "max_connections_per_address"
    ),
    "ban_min_prefix_ipv4": Spec(
        int, lambda s: s.ban_min_prefix_ipv4, *IPV4_PREFIXES, "ban_min_prefix_ipv4"
    ),
    "ban_min_prefix_ipv6": Spec(
        int, lambda s: s.ban_min_prefix_ipv6, *IPV6_PREFIXES, "ban_min_prefix_ipv6"
    ),
    "max_file_bytes": Spec(
        int, lambda s: s.max_file_bytes, 1, 1 << 40, "max_file_bytes", doc="largest upload"
    ),
    "user_storage_quota_bytes": Spec(
        int,
        lambda s: s.user_storage_quota_bytes,
        0,
        1 << 50,
        "user_storage_quota_bytes",
        doc="file bytes one user may keep stored",
    ),
}


def _checked(name: str, value: Any) -> Value:
    spec = SPECS.get(name)
    if spec is None:
        raise InvalidInput(f"unknown setting {name!r}", code="unknown_setting")
    kind = spec.kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str) and "\x00" not in value
    if not ok:
        raise InvalidInput(f"{name} must be a {kind.__name__}", code="invalid_setting")
    if spec.choices is not None:
        if value not in spec.choices:
            raise InvalidInput(
                f"{name} must be one of {', '.join(spec.choices)}", code="invalid_setting"
            )
        return value  # type: ignore[no-any-return]
    size = len(value) if isinstance(value, str) else value
    if (spec.minimum is not None and size < spec.minimum) or (
        spec.maximum is not None and size > spec.maximum
    ):
        unit = " characters" if kind is str else ""
        raise InvalidInput(
            f"{name} must be between {spec.minimum:g} and {spec.maximum:g}{unit}",
            code="invalid_setting",
        )
    if isinstance(value, str):
        value = value.strip() if name == "server_title" else value
    return value  # type: ignore[no-any-return]


def validate(changes: Mapping[str, Any]) -> dict[str, Value]:
    """Check a partial update: an unknown name or a bad value is a 400 naming it."""
    if not changes:
        raise InvalidInput("give at least one setting", code="invalid_setting")
    return {name: _checked(name, value) for name, value in changes.items()}


class LiveSettings:
    def __init__(self, base: Settings) -> None:
        self.base = base
        self.values: dict[str, Value] = {name: spec.default(base) for name, spec in SPECS.items()}

    def apply(self, stored: Mapping[str, Any]) -> Settings:
        """Take stored values (unknown or invalid ones, e.g. from a newer node, are
        skipped) over the first-run defaults; return ``Settings`` carrying them."""
        values = {name: spec.default(self.base) for name, spec in SPECS.items()}
        for name, raw in stored.items():
            try:
                values[name] = _checked(name, raw)
            except InvalidInput:
                continue
        self.values = values
        overrides = {
            spec.field: values[name] for name, spec in SPECS.items() if spec.field is not None
        }
        return msgspec.structs.replace(self.base, **overrides)

    @property
    def server_title(self) -> str:
        return str(self.values["server_title"])

    @property
    def welcome_message(self) -> str:
        return str(self.values["welcome_message"])

    @property
    def registration_open(self) -> bool:
        return bool(self.values["registration_open"])

    @property
    def invite_max_uses(self) -> int:
        return int(self.values["invite_max_uses"])

    @property
    def log_retention_days(self) -> int:
        return int(self.values["log_retention_days"])

    @property
    def message_retention_days(self) -> int:
        return int(self.values["message_retention_days"])

    @property
    def private_rooms(self) -> str:
        """Who may create private rooms: "everyone", "trusted" or "admins"."""
        return str(self.values["private_rooms"])
