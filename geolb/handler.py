"""One packet in, one packet out: parse -> lookup -> answer -> encode, never raising."""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import random
from dataclasses import dataclass, field

from geolb import model, wire
from geolb.answer import Answer, build_answer
from geolb.fastpath import Entry, Key, PacketCache, StaticEntry, geo_entry, scan
from geolb.geo.decide import GeoDecider, Locator, ScopeMemos
from geolb.lookup import lookup
from geolb.model import SERVFAIL, IPAddress
from geolb.runtime import Runtime, Snapshot, settle_memory

log = logging.getLogger("geolb.dns")
SETTLE_EVERY = 2048  # cache fills between two settle_memory() calls


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

    def count(self, key: tuple[str, int, int], geo: tuple[str, str, bool] | None, answers: int = 1) -> None:
        """`answers` answers of one kind: (zone, qtype, rcode), and (pool, region, failed open) for GEO."""
        self.queries[key] += answers
        if geo is not None:
            pool, region, failed_open = geo
            self.geo_answers[pool, region] += answers
            if failed_open:
                self.fail_open[pool] += answers

    def add(self, other: QueryStats) -> None:
        self.queries.update(other.queries)
        self.geo_answers.update(other.geo_answers)
        self.fail_open.update(other.fail_open)
        self.dropped += other.dropped


class QueryHandler:
    """Answers DNS messages from the runtime's current snapshot."""

    def __init__(self, runtime: Runtime, locator: Locator, rng: random.Random | None = None, *, fast_path: bool = True) -> None:
        self.runtime = runtime
        self.locator = locator
        self.rng = rng or random.Random()
        self._decider_for: tuple[int, GeoDecider] | None = None
        self._scope_memos = ScopeMemos()
        self.stats = QueryStats()
        self.cache = PacketCache() if fast_path else None
        self._fills = 0
        if self.cache is not None:
            cache = self.cache
            cache.on_drop = self._fold_hits
            cache.reset(runtime.snapshot.generation)
            # Every swap (reload, health change) drops the cache before the next query runs.
            runtime.on_swap(lambda snapshot: cache.reset(snapshot.generation))

    def decider(self, snapshot: Snapshot) -> GeoDecider:
        cached = self._decider_for
        if cached is None or cached[0] != snapshot.generation:
            cached = (snapshot.generation, GeoDecider(self.locator, snapshot.health, self._scope_memos))
            self._decider_for = cached
        return cached[1]

    def handle(self, data: bytes, host: str, tcp: bool) -> bytes | None:
        """The response to `data` from the peer `host`, or None to drop the packet."""
        cache = self.cache
        if cache is None:
            return self._full(data, host, tcp, None)
        tail = data[2:]
        known = cache.exact.get((tail, tcp))
        if known is None and cache.exact_by_peer:
            known = cache.exact_by_peer.get((tail, tcp, host))
        if known is not None:
            entry, qend = known
        else:
            scanned = scan(data, tcp)
            if scanned is None:
                return self._full(data, host, tcp, None)
            key, qend, by_peer = scanned
            found, peer = cache.get(key, host, by_peer)
            if found is None:
                return self._full(data, host, tcp, (cache, key, qend, data))
            entry = found
            cache.remember(data, qend, tcp, entry, peer)
        return entry.respond(data, qend, self.rng)  # counts itself; see fold_hits

    def _fold_hits(self, entries: list[Entry]) -> None:
        """Move the answers counted on cached entries into the stats (at scrape time and on reset)."""
        for entry in entries:
            if entry.hits:
                self.stats.count(entry.stats, entry.geo, entry.hits)
                entry.hits = 0

    def fold_stats(self) -> QueryStats:
        """The counters, with every answer given so far included."""
        if self.cache is not None:
            self._fold_hits(self.cache.live)
        return self.stats

    def _full(self, data: bytes, host: str, tcp: bool, fill: tuple[PacketCache, Key, int, bytes] | None) -> bytes | None:
        """The full path: dnslib parse, lookup, answer, encode; its answer may fill the packet cache."""
        try:
            parsed = wire.parse_query(data)
            peer = peer_address(host)
        except (wire.WireError, ValueError):
            self.stats.dropped += 1
            return None
        if isinstance(parsed, wire.Rejection):
            self.stats.count(("", parsed.query.qtype, parsed.rcode), None)
            return self._encode(parsed.query, Answer(parsed.rcode, False), tcp)
        query = parsed
        try:
            snapshot = self.runtime.snapshot
            found = lookup(snapshot.zones, query.name, query.qtype, query.qclass)
            client = client_address(query, peer)
            answer = build_answer(found, client, snapshot.zones, self.decider(snapshot), self.rng)
            stats_key = (found.zone, query.qtype, answer.rcode)
            decision = answer.decision
            geo = None
            if decision is not None and decision.region is not None:
                geo = (decision.pool, decision.region.name, decision.failed_open)
            self.stats.count(stats_key, geo)
            response = self._encode(query, answer, tcp)
            if fill is not None and response is not None and snapshot is self.runtime.snapshot:
                self._fill(fill, query, answer, response, stats_key, geo, host, client is peer, tcp)
            return response
        except Exception:
            # A bug must cost one answer, not the server.
            log.exception("internal error answering %s type %d", query.name, query.qtype)
            self.stats.count(("", query.qtype, SERVFAIL), None)
            return self._encode(query, Answer(SERVFAIL, False), tcp)

    def _fill(
        self,
        fill: tuple[PacketCache, Key, int, bytes],
        query: wire.Query,
        answer: Answer,
        response: bytes,
        stats_key: tuple[str, int, int],
        geo: tuple[str, str, bool] | None,
        host: str,
        from_peer: bool,
        tcp: bool,
    ) -> None:
        cache, key, qend, data = fill
        self._fills += 1
        if self._fills % SETTLE_EVERY == 0:
            settle_memory()  # cached answers live until the next swap: keep them out of GC passes
        decision = answer.decision
        if decision is None or geo is None:  # static, NODATA, or no region: one packet
            static = StaticEntry((response,), stats_key)
            cache.put(key, host, False, static)
            cache.remember(data, qend, tcp, static)
            return
        geo_rrset = answer.answer[-1] if answer.answer else None
        if len(answer.answer) != 1 or geo_rrset is None or geo_rrset.name != query.name:
            return  # a GEO answer behind a CNAME: the full path answers it every time
        # Encode every candidate once, in candidate order, and cut the packet into records.
        everything = dataclasses.replace(
            answer,
            answer=(dataclasses.replace(geo_rrset, rdatas=tuple(model.address_rdata(e.address) for e in decision.candidates)),),
        )
        packet = self._encode(query, everything, tcp)
        if packet is None or packet[2] & 0x02:  # truncated: not worth a fast path
            return
        entry = geo_entry(
            packet,
            qend,
            tuple(len(e.address.packed) for e in decision.candidates),
            tuple(e.weight for e in decision.candidates),
            answer.max_answers,
            stats_key,
            geo,
        )
        if entry is not None:
            cache.put(key, host, from_peer, entry)
            cache.remember(data, qend, tcp, entry, host if from_peer else None)

    def _encode(self, query: wire.Query, answer: Answer, tcp: bool) -> bytes | None:
        try:
            return wire.to_wire(query, answer, query.response_limit(tcp))
        except Exception:
            log.exception("cannot encode the answer to %s", query.name)
            return None
