"""Which address a request comes from: the socket peer, or X-Forwarded-For behind a
proxy we were told to trust. Headers from anyone else are ignored (they are forgeable)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

# One IPv6 subscriber usually holds a whole /64 (SLAAC, privacy addresses): limits that
# counted each address separately would give one client 2^64 buckets.
IPV6_LIMIT_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Proxies:
    """Trusted proxy networks (a plain class: framework signature models can carry it)."""

    def __init__(self, networks: Sequence[Network] = ()) -> None:
        self.networks = tuple(networks)

    def __contains__(self, address: str | None) -> bool:
        ip = _ip(address) if address else None
        return ip is not None and self.holds(ip)

    def holds(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip in network for network in self.networks)


def parse_networks(entries: Iterable[str]) -> Proxies:
    """Addresses or CIDRs; raises ValueError naming the bad entry."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {entry!r}") from None
    return Proxies(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every ``X-Forwarded-For`` line of raw ASGI headers, in order (for client_address)."""
    return [bytes(value).decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]


def client_address(
    peer: str | None, forwarded_for: str | Sequence[str] | None, trusted: Proxies
) -> str:
    """The first hop, walking X-Forwarded-For from the right, that is not a trusted proxy.

    Several header lines are one chain (RFC 9110: a repeated list header is the same as
    one line joined with commas); reading only the first line would let a client choose
    its address by sending a line of its own ahead of the proxy's.
    """
    if not peer:
        return "unknown"
    if not forwarded_for or peer not in trusted:
        return peer
    lines = [forwarded_for] if isinstance(forwarded_for, str) else list(forwarded_for)
    hops = [hop.strip() for line in lines for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            # Garbage in the chain: stop at the last hop we could vouch for.
            return peer
        if not trusted.holds(ip):
            return str(ip)
        peer = str(ip)
    return peer


def limit_key(address: str) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((ip, IPV6_LIMIT_PREFIX), strict=False)
        return str(network)
    # IPv4, also when a dual-stack socket reports it IPv4-mapped (::ffff:a.b.c.d).
    return str(ip) if ip is not None else address
