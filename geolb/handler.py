"""One packet in, one packet out: parse -> lookup -> answer -> encode, never raising."""

from __future__ import annotations

import collections
import ipaddress
import logging
import random
from dataclasses import dataclass, field

from geolb import wire
from geolb.answer import Answer, build_answer
from geolb.geo.decide import GeoDecider, Locator, ScopeMemos
from geolb.lookup import lookup
from geolb.model import IPAddress
from geolb.runtime import Runtime, Snapshot

log = logging.getLogger("geolb.dns")
TCP_LIMIT = 65535


def client_address(query: wire.Query, peer: IPAddress) -> IPAddress:
    """SPEC §3 rule 1: the ECS address when it has a non-zero source prefix, else the peer."""
    edns = query.edns
    if edns is not None and edns.ecs is not None and edns.ecs.source > 0:
        return edns.ecs.network.network_address
    return peer


def peer_address(host: str) -> IPAddress:
    """The sender of a packet; an IPv4-mapped IPv6 peer (dual-stack socket) counts as IPv4."""
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class QueryStats:
    """Plain counters on the hot path; /metrics reads them at scrape time."""

    queries: collections.Counter[tuple[str, int, int]] = field(default_factory=collections.Counter)  # zone, qtype, rcode
    geo_answers: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)  # pool, region
    fail_open: collections.Counter[str] = field(default_factory=collections.Counter)  # pool
    dropped: int = 0


class QueryHandler:
    """Answers DNS messages from the runtime's current snapshot."""

    def __init__(self, runtime: Runtime, locator: Locator, rng: random.Random | None = None) -> None:
        self.runtime = runtime
        self.locator = locator
        self.rng = rng or random.Random()
        self._decider_for: tuple[int, GeoDecider] | None = None
        self._scope_memos = ScopeMemos()
        self.stats = QueryStats()

    def decider(self, snapshot: Snapshot) -> GeoDecider:
        cached = self._decider_for
        if cached is None or cached[0] != snapshot.generation:
            cached = (snapshot.generation, GeoDecider(self.locator, snapshot.health, self._scope_memos))
            self._decider_for = cached
        return cached[1]

    def handle(self, data: bytes, peer: IPAddress, tcp: bool) -> bytes | None:
        """The response to send, or None to drop the packet."""
        try:
            parsed = wire.parse_query(data)
        except wire.WireError:
            self.stats.dropped += 1
            return None
        if isinstance(parsed, wire.Rejection):
            self.stats.queries["", parsed.query.qtype, parsed.rcode] += 1
            return self._encode(parsed.query, Answer(parsed.rcode, False), tcp)
        query = parsed
        try:
            snapshot = self.runtime.snapshot
            found = lookup(snapshot.zones, query.name, query.qtype, query.qclass)
            answer = build_answer(found, client_address(query, peer), snapshot.zones, self.decider(snapshot), self.rng)
            stats = self.stats
            stats.queries[found.zone, query.qtype, answer.rcode] += 1
            decision = answer.decision
            if decision is not None and decision.region is not None:
                stats.geo_answers[decision.pool, decision.region.name] += 1
                if decision.failed_open:
                    stats.fail_open[decision.pool] += 1
            return self._encode(query, answer, tcp)
        except Exception:
            # A bug must cost one answer, not the server.
            log.exception("internal error answering %s type %d", query.name, query.qtype)
            self.stats.queries["", query.qtype, wire.SERVFAIL] += 1
            return self._encode(query, Answer(wire.SERVFAIL, False), tcp)

    def _encode(self, query: wire.Query, answer: Answer, tcp: bool) -> bytes | None:
        try:
            return wire.to_wire(query, answer, TCP_LIMIT if tcp else query.udp_limit)
        except Exception:
            log.exception("cannot encode the answer to %s", query.name)
            return None
