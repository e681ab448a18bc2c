"""The only-from allowlist of the TCP agent: parse once, match addresses.

Entries are IPv4 or IPv6 addresses or networks in CIDR notation, separated by
commas or spaces (``10.0.0.5,192.168.0.0/24 ::1``). An empty list allows every
address, as Checkmk's agent does without ``only_from``. An IPv4-mapped IPv6
client address (``::ffff:10.0.0.5``, seen on dual-stack sockets) matches the
IPv4 entries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from atoll.core.errors import InputError

__all__ = ["OnlyFrom", "parse_only_from"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class OnlyFrom:
    """A parsed allowlist."""

    networks: tuple[Network, ...] = ()

    @property
    def allow_all(self) -> bool:
        return not self.networks

    def allows(self, address: str) -> bool:
        """Whether a client address (as ``getpeername`` gives it) may connect."""
        if self.allow_all:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def render(self) -> str:
        """The list as the ``OnlyFrom:`` header line shows it (space separated)."""
        return " ".join(
            str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
            for n in self.networks
        )


def parse_only_from(entries: str | Iterable[str] | None) -> OnlyFrom:
    """Parse ``10.0.0.5,127.0.0.1`` (or a list of such strings).

    Raises:
        InputError: an entry is neither an address nor a network.
    """
    if entries is None:
        return OnlyFrom()
    if isinstance(entries, str):
        entries = [entries]
    networks: list[Network] = []
    for chunk in entries:
        for item in chunk.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise InputError(
                    f"only-from: {item!r} is not an IP address or network",
                    details=str(exc),
                    resolution="give addresses or CIDR networks, e.g. 10.0.0.5,192.168.1.0/24,::1",
                ) from exc
    return OnlyFrom(tuple(networks))
