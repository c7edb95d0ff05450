"""Bans: the rules every node holds in memory, and the use cases that change them.

Each node keeps every ban in a ``BanList`` (a dictionary lookup for users, a short scan
of networks for addresses), so refusing a banned caller costs no query. Changes travel
between nodes as broker events and every node reloads the whole list periodically, so
a missed event heals. Expiry needs no purge: a rule past its ``expires_at`` simply
stops matching, judged by the server's clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from dialtone.errors import Forbidden, InvalidInput
from dialtone.security.addresses import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class BanRule:
    id: str
    user_id: str | None
    network: Network | None
    expires_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


def parse_ban_address(text: str) -> Network:
    """An IPv4/IPv6 address or CIDR, normalised (host bits cleared); 400 otherwise."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidInput(
            "address must be an IPv4 or IPv6 address or CIDR subnet", code="invalid_address"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        prefix = max(0, network.prefixlen - 96)
        return ipaddress.ip_network(f"{mapped}/{prefix}", strict=False)
    return network


def parse_ip(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def banned(rule: BanRule) -> Forbidden:
    return Forbidden("banned from this server", code="banned")


class BanList:
    def __init__(self) -> None:
        self._rules: dict[str, BanRule] = {}
        self._by_user: dict[str, set[str]] = {}
        self._networks: dict[str, BanRule] = {}

    def replace(self, rules: Iterable[BanRule]) -> None:
        self._rules.clear()
        self._by_user.clear()
        self._networks.clear()
        for rule in rules:
            self.add(rule)

    def add(self, rule: BanRule) -> None:
        self.remove(rule.id)
        self._rules[rule.id] = rule
        if rule.user_id is not None:
            self._by_user.setdefault(rule.user_id, set()).add(rule.id)
        if rule.network is not None:
            self._networks[rule.id] = rule

    def remove(self, ban_id: str) -> None:
        rule = self._rules.pop(ban_id, None)
        if rule is None:
            return
        if rule.user_id is not None:
            ids = self._by_user.get(rule.user_id)
            if ids is not None:
                ids.discard(ban_id)
                if not ids:
                    del self._by_user[rule.user_id]
        self._networks.pop(ban_id, None)

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def has_address_bans(self) -> bool:
        return bool(self._networks)

    def user_ban(self, user_id: str, now: datetime) -> BanRule | None:
        ids = self._by_user.get(user_id)
        if not ids:
            return None
        for ban_id in ids:
            rule = self._rules[ban_id]
            if rule.active(now):
                return rule
        return None

    def address_ban(self, address: str | None, now: datetime) -> BanRule | None:
        if not self._networks:
            return None
        ip = parse_ip(address)
        if ip is None:
            return None
        for rule in self._networks.values():
            assert rule.network is not None
            if ip.version == rule.network.version and ip in rule.network and rule.active(now):
                return rule
        return None

    def check_user(self, user_id: str, now: datetime) -> None:
        rule = self.user_ban(user_id, now)
        if rule is not None:
            raise banned(rule)

    def check_address(self, address: str | None, now: datetime) -> None:
        rule = self.address_ban(address, now)
        if rule is not None:
            raise banned(rule)
