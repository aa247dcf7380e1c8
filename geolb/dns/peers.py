"""The peer a packet came from, as the client it is: host text -> address (IPv4-mapped IPv6 counts as IPv4).

Sockets hand the peer over as text; the fast path, cookies and rate limiting each want it in
another form, per packet, so each keeps a `remembered` conversion (bounded: a flood of
spoofed sources only makes the table start over).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TypeVar

from geolb.model import IPAddress

REMEMBERED = 50_000  # peers whose conversion is kept; past it the table starts over
T = TypeVar("T")


def peer_address(host: str) -> IPAddress:
    """The sender of a packet; an IPv4-mapped IPv6 peer (dual-stack socket) counts as IPv4."""
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def remembered(convert: Callable[[IPAddress], T], limit: int = REMEMBERED) -> Callable[[str], T]:
    """host text -> convert(peer_address(host)), computed once per host."""
    known: dict[str, T] = {}

    def lookup(host: str) -> T:
        found = known.get(host)
        if found is None:
            if len(known) >= limit:
                known.clear()
            found = known[host] = convert(peer_address(host))
        return found

    return lookup
