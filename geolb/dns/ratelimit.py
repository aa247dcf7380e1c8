"""Response rate limiting over UDP (RRL): a token bucket per client network and response kind, with slip.

A flood of spoofed queries makes a server an amplifier aimed at the spoofed address;
limiting how many responses of one kind one network gets per second takes that away.
Every `slip`th limited response still goes out, truncated (TC, no records), so a real
client behind a busy network retries over TCP and is answered there. TCP and queries
with a valid server cookie are never limited (they cannot be spoofed); see handler.py.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from geolb.dns.peers import remembered
from geolb.model import IPAddress

ANSWER, NXDOMAIN_KIND, ERROR = 0, 1, 2
KIND_NAMES = ("answer", "nxdomain", "error")
OK, DROP, SLIP = 0, 1, 2
BUCKETS = 100_000  # client networks followed at once; past it the table starts over (a flood of networks)


@dataclass(frozen=True)
class RateLimits:
    """Responses per second per client network, by kind (0: that kind is not limited)."""

    answers: float = 0.0
    nxdomains: float = 0.0
    errors: float = 0.0
    window: float = 5.0  # seconds of credit a quiet network builds up (a burst this long passes)
    slip: int = 2  # every slip-th limited response goes out truncated; 0: all are dropped
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56

    @property
    def enabled(self) -> bool:
        return any((self.answers, self.nxdomains, self.errors))

    def rate(self, kind: int) -> float:
        return (self.answers, self.nxdomains, self.errors)[kind]


def kind_of(response: bytes) -> int:
    """The response kind an answer counts as, from its RCODE."""
    rcode = response[3] & 0x0F
    if rcode == 0:
        return ANSWER
    return NXDOMAIN_KIND if rcode == 3 else ERROR


class RateLimiter:
    """Token buckets keyed by (client network, kind)."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[tuple[bytes, int], list[float]] = {}  # -> [tokens, last refill, limited so far]
        self._network = remembered(self._network_of)
        self.dropped = [0, 0, 0]  # by kind
        self.slipped = [0, 0, 0]

    def _network_of(self, address: IPAddress) -> bytes:
        """The client network an address is limited with (/24, /56 by default), as bytes."""
        prefix = self.limits.ipv4_prefix if address.version == 4 else self.limits.ipv6_prefix
        return ipaddress.ip_network((address, prefix), strict=False).network_address.packed + bytes((prefix,))

    def check(self, host: str, kind: int) -> int:
        """OK to send, DROP it, or SLIP it (send it truncated)."""
        rate = self.limits.rate(kind)
        if not rate:
            return OK
        now = self.clock()
        key = (self._network(host), kind)
        bucket = self._buckets.get(key)
        capacity = rate * self.limits.window
        if bucket is None:
            if len(self._buckets) >= BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[key] = [capacity, now, 0.0]
        else:
            bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return OK
        bucket[2] += 1
        slip = self.limits.slip
        if slip and bucket[2] % slip == 0:
            self.slipped[kind] += 1
            return SLIP
        self.dropped[kind] += 1
        return DROP


def truncated(response: bytes) -> bytes:
    """The response cut to its header and question, TC set: "ask me again over TCP"."""
    offset = 12
    if response[4:6] == b"\x00\x01":
        while response[offset]:
            offset += response[offset] + 1
        offset += 5
    head = response[:2] + bytes((response[2] | 0x02, response[3])) + response[4:6] + b"\x00\x00\x00\x00\x00\x00"
    return head + response[12:offset]
