"""One packet in, one packet out: parse -> lookup -> answer -> encode, never raising."""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from geolb import model
from geolb.answer import Answer, build_answer
from geolb.dns import wire
from geolb.dns.cache import (
    ECS_LONGEST,
    CachedAnswer,
    Key,
    PacketCache,
    StaticEntry,
    cut_records,
    opt_offset,
    question_name,
    scan,
    static_entry,
)
from geolb.dns.cookies import RESPONSE_OPTION_SIZE, CookieJar, new_secret
from geolb.dns.lookup import QTYPE_NSEC, QTYPE_RRSIG, Lookup, RumTarget, lookup, rum_answer
from geolb.dns.message import QueryKey
from geolb.dns.names import labels_to_key
from geolb.dns.peers import peer_address, remembered
from geolb.dns.ratelimit import KIND_NAMES, OK, SLIP, RateLimiter, RateLimits, kind_of, truncated
from geolb.dnssec.sign import Signer, rrsig_records
from geolb.geo.choose import AnswerMemo, GeoAnswers, SteerJob, steer_jobs
from geolb.geo.entry import GeoEntry, RegionRecords
from geolb.geo.rank import BUSY, FAIL_OPEN
from geolb.geo.regionmap import RegionMap
from geolb.health.state import HealthView
from geolb.model import BADCOOKIE, NOERROR, NXDOMAIN, SERVFAIL, IPAddress
from geolb.runtime import Runtime, Snapshot
from geolb.steer.evidence import Evidence
from geolb.steer.overlay import KINDS, Steered
from geolb.steer.tokens import Sighting

log = logging.getLogger("geolb.dns")
OWN_RECORD_TYPES = (QTYPE_NSEC, QTYPE_RRSIG)  # answered from the name's own records in a signed zone (see Signer.own_records)
SIGNED_SETS = 1024  # per region of a signed GEO entry: endpoint sets whose RRSIG records are kept ready
Fill = tuple[PacketCache, Key, int, int, int]  # the cache, the key, end of question, ECS offset, COOKIE offset
MAX_SIGHTINGS = 20_000  # kept between two sends up to the main process; beyond, dropped and counted
NegativeKey = tuple[str, int, int, int, tuple[object, ...]]  # zone, rcode, qtype, question length, rest of the key


def _opt_rdlen(query: wire.Query) -> int | None:
    """The size of the OPT data our encoder writes for this query: the ECS echo, if any (None: no OPT)."""
    if query.edns is None:
        return None
    ecs = query.edns.ecs
    return 0 if ecs is None else 8 + (ecs.source + 7) // 8


def client_address(query: wire.Query, peer: IPAddress) -> IPAddress:
    """SPEC §3 rule 1: the ECS address when it has a non-zero source prefix, else the peer."""
    edns = query.edns
    if edns is not None and edns.ecs is not None and edns.ecs.source > 0:
        return edns.ecs.network.network_address
    return peer


class AnswerKey(NamedTuple):
    """What GEO answers are counted by (geolb_geo_answers_total): the pool and the region that answered."""

    pool: str
    region: str


@dataclass
class QueryStats:
    """Plain counters on the hot path; /metrics reads them at scrape time."""

    queries: collections.Counter[QueryKey] = field(default_factory=collections.Counter)
    geo_answers: collections.Counter[AnswerKey] = field(default_factory=collections.Counter)
    fail_open: collections.Counter[str] = field(default_factory=collections.Counter)  # pool
    busy: collections.Counter[str] = field(default_factory=collections.Counter)  # pool: answered busy endpoints
    # (pool, kind): answers of latency-steered pools by the evidence that chose the region (steer.overlay.KINDS)
    evidence: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    rate_limited: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)  # (kind, dropped|slipped)
    client_errors: collections.Counter[str] = field(default_factory=collections.Counter)  # malformed packets by wire.CLIENT_ERRORS kind
    dropped: int = 0
    sightings_dropped: int = 0  # token lookups not recorded: more than MAX_SIGHTINGS between two sends

    def count(self, key: QueryKey, geo: tuple[str, str, str] | None, answers: int = 1, evidence: str | None = None) -> None:
        """`answers` answers of one kind: (zone, qtype, rcode), and (pool, region, tier) for GEO;
        `evidence`: what chose the region, for a latency-steered pool."""
        self.queries[key] += answers
        if geo is not None:
            if evidence is not None:
                self.evidence[(geo[0], evidence)] += answers
            pool, region, tier = geo
            self.geo_answers[AnswerKey(pool, region)] += answers
            if tier == FAIL_OPEN:
                self.fail_open[pool] += answers
            elif tier == BUSY:
                self.busy[pool] += answers

    def add(self, other: QueryStats) -> None:
        self.queries.update(other.queries)
        self.geo_answers.update(other.geo_answers)
        self.fail_open.update(other.fail_open)
        self.busy.update(other.busy)
        self.evidence.update(other.evidence)
        self.rate_limited.update(other.rate_limited)
        self.client_errors.update(other.client_errors)
        self.dropped += other.dropped
        self.sightings_dropped += other.sightings_dropped


class ClientErrorLog:
    """One log line per kind of malformed packet at most every `interval` seconds, never a traceback:
    anyone can send garbage, so the log must not grow with it (the counter in /metrics does)."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[str, float] = {}

    def note(self, kind: str, host: str, detail: str) -> None:
        now = self.clock()
        if now < self._next.get(kind, -math.inf):
            return
        self._next[kind] = now + self.interval
        log.warning(
            "malformed packet (%s) from %s: %s; counted in geolb_dns_client_errors_total, logged at most once a minute",
            kind,
            host,
            detail,
        )


class QueryHandler:
    """Answers DNS messages from the runtime's current snapshot."""

    def __init__(
        self,
        runtime: Runtime,
        rng: random.Random | None = None,
        *,
        fast_path: bool = True,
        nsid: bytes | None = None,
        cookie_secrets: Sequence[bytes] = (),
        rate_limits: RateLimits | None = None,
        rum_addresses: Sequence[IPAddress] = (),
    ) -> None:
        self.runtime = runtime
        self.rum_addresses = tuple(rum_addresses)  # what "<token>.<rum_name>" answers (SPEC §10 resolver discovery)
        self.sightings: list[Sighting] = []  # who asked for which token, until the worker sends them up
        self.nsid = nsid or None  # this server's name for NSID (RFC 5001); None: not sent
        self.cookies = CookieJar(cookie_secrets or (new_secret(),))
        self._cookie_ok = False  # the query being answered came with a valid server cookie
        self.limiter = RateLimiter(rate_limits) if rate_limits is not None and rate_limits.enabled else None
        if self.limiter is None:
            self.handle = self._respond  # type: ignore[method-assign]  # see handle(): no limits, nothing in between
        self.rng = rng or random.Random()
        self._geo_for: tuple[int, GeoAnswers] | None = None
        self._answer_maps = AnswerMemo()
        self._peer_address = remembered(lambda address: (address.version, int(address)))
        self.stats = QueryStats()
        self.client_errors = ClientErrorLog()
        self.signer = Signer()
        self.signer.rum_types = frozenset(model.address_rtype(a) for a in self.rum_addresses)
        self.signed_cached_until = math.inf  # the packet cache holds signatures until then (see expire_signatures)
        self.cache = PacketCache() if fast_path else None
        if self.cache is not None:
            cache = self.cache
            cache.on_drop = self._fold_hits
            cache.reset(runtime.snapshot.generation)
            # Every swap (reload, health change) drops the cache before the next query runs.
            runtime.on_swap(lambda snapshot: cache.reset(snapshot.generation))

    def expire_signatures(self, now: float) -> None:
        """Drop the ready packets once the signatures in them are due for a refresh (called every minute)."""
        if self.cache is not None and now >= self.signed_cached_until:
            self.cache.reset(self.cache.generation)
            self.signed_cached_until = math.inf

    def geo(self, snapshot: Snapshot) -> GeoAnswers:
        """The GEO choices of a snapshot (its AnswerMaps come from a memo kept across snapshots)."""
        known = self._geo_for
        if known is None or known[0] != snapshot.generation:
            # Room for every pool's two families twice over (the state before a flap and after),
            # so a zone set with many pools never rebuilds the maps it uses on every snapshot.
            self._answer_maps.limit = max(AnswerMemo.LIMIT, 4 * len(snapshot.maps))
            self._answer_maps.steered_limit = max(AnswerMemo.STEERED, 4 * len(snapshot.evidence))  # likewise, for latency pools
            known = (snapshot.generation, GeoAnswers(snapshot.maps, snapshot.health, self._answer_maps, snapshot.evidence))
            self._geo_for = known
        return known[1]

    def steer_jobs(self, zones: model.ZoneSet, maps: Mapping[str, RegionMap], health: HealthView, evidence: Evidence) -> list[SteerJob]:
        """The Steered maps (latency pools with evidence) that this state will need and the memo lacks: a worker builds
        them in a thread before it swaps the state in, so that no query waits for one (adopt them with adopt_steered)."""
        self._answer_maps.steered_limit = max(AnswerMemo.STEERED, 4 * len(evidence))
        return steer_jobs(self._answer_maps, zones, maps, health, evidence)

    def adopt_steered(self, jobs: Sequence[SteerJob], built: Sequence[Steered]) -> None:
        for job, steered in zip(jobs, built, strict=True):
            self._answer_maps.add_steered(job.key, steered)

    def handle(self, data: bytes, host: str, tcp: bool) -> bytes | None:
        """The response to `data` from the peer `host`, or None to drop the packet. Never raises.

        Over UDP, with rate limits set, a network past its rate gets nothing or (every slip-th
        time) a truncated answer; TCP and a valid server cookie are never limited. Without
        limits (the default) `handle` is `_respond` itself: nothing is added per query.
        """
        self._cookie_ok = False
        response = self._respond(data, host, tcp)
        limiter = self.limiter
        if limiter is None or response is None or tcp or self._cookie_ok:
            return response
        try:
            verdict = limiter.check(host, kind_of(response))
            if verdict == OK:
                return response
            return truncated(response) if verdict == SLIP else None
        except Exception:
            log.exception("internal error in rate limiting")  # a bug must not cost the answer
            return response

    def _respond(self, data: bytes, host: str, tcp: bool) -> bytes | None:
        """The answer: from the packet cache when this question was answered before, else the full path."""
        cache = self.cache
        try:
            if cache is None:
                return self._full(data, host, tcp, None)
            exact = (data[2:], tcp)
            known = cache.exact.get(exact)
            if known is not None:
                entry, qend, ecs_at, cookie_at = known
                if type(entry) is GeoEntry and ecs_at >= 0 and data[ecs_at + 2]:
                    # The same query (ECS address and all) a second time: keep its answer ready.
                    pinned = entry.pinned(data, qend, ecs_at, self.rng)
                    if pinned is not None:
                        cache.exact[exact] = (pinned, qend, ecs_at, cookie_at)
                        entry = pinned
            else:
                shape = cache.shapes.get((len(data), tcp))
                if shape is not None and data[2 : shape.cut] == shape.prefix and not data[-1] & shape.mask:
                    # Byte for byte the question last scanned at this length, but for ID and ECS address.
                    entry, qend, ecs_at, cookie_at = shape.entry, shape.qend, shape.ecs_at, shape.cookie_at
                    cache.remember(data, tcp, entry, qend, ecs_at, cookie_at)
                else:
                    scanned = scan(data, tcp)
                    if scanned is None:
                        return self._full(data, host, tcp, None)
                    key, qend, ecs_at, cookie_at = scanned
                    found = cache.entries.get(key)
                    if found is None:
                        negative = self._negative_key(key)
                        found = None if negative is None else cache.negatives.get(negative)
                        if found is None:
                            return self._full(data, host, tcp, (cache, key, qend, ecs_at, cookie_at), negative)
                    entry = found
                    cache.remember(data, tcp, entry, qend, ecs_at, cookie_at)
                    if ecs_at >= 0:
                        cache.learn_shape(data, tcp, entry, qend, ecs_at, cookie_at)
            response = entry.respond(data, qend, ecs_at, host, self.rng)  # counts itself; see fold_hits
            return response if cookie_at < 0 else self._with_cookie(response, data, ecs_at, cookie_at, host)
        except Exception:
            # A bug must cost one answer, not the server (the full path answers SERVFAIL itself).
            log.exception("internal error on the fast path")
            self.stats.dropped += 1
            return None

    def _with_cookie(self, response: bytes, query: bytes, ecs_at: int, cookie_at: int, host: str) -> bytes:
        """A ready answer with the COOKIE option added to its OPT, which the entries always put last, holding
        at most the ECS echo. The entry was made with room for the option (see scan)."""
        length = (query[cookie_at + 2] << 8) | query[cookie_at + 3]
        option, self._cookie_ok = self.cookies.answer(query[cookie_at + 4 : cookie_at + 4 + length], host)
        echo = 0 if ecs_at < 0 else 8 + ((query[ecs_at + 2] + 7) >> 3)
        at = len(response) - echo - 2  # the OPT's RDLENGTH
        return b"".join((response[:at], (echo + len(option)).to_bytes(2, "big"), response[at + 2 :], option))

    def _fold_hits(self, entries: Sequence[CachedAnswer]) -> None:
        """Move the answers counted on cached entries into the stats (at scrape time and on reset)."""
        for entry in entries:
            if isinstance(entry, GeoEntry):
                tier = entry.choices.tier
                width, steered = entry.choices.width, entry.choices.pool.steering == "latency"
                for index, count in enumerate(entry.counts):
                    if count:
                        kind = KINDS[index // width] if steered else None
                        self.stats.count(entry.stats, (entry.pool, entry.names[index % width], tier), count, kind)
                        entry.counts[index] = 0
            elif isinstance(entry, StaticEntry) and entry.hits:
                self.stats.count(entry.stats, None, entry.hits)
                entry.hits = 0

    def fold_stats(self) -> QueryStats:
        """The counters, with every answer given so far included."""
        if self.cache is not None:
            self._fold_hits(self.cache.live)
        if self.limiter is not None:
            for kind, name in enumerate(KIND_NAMES):
                self.stats.rate_limited[(name, "dropped")] = self.limiter.dropped[kind]
                self.stats.rate_limited[(name, "slipped")] = self.limiter.slipped[kind]
        return self.stats

    def _negative_key(self, key: Key) -> NegativeKey | None:
        """For a question that looks up to NXDOMAIN or NODATA (SOA alone in AUTHORITY): the key of its
        negative entry. The lookup is the pure one the full path runs, on the scanned bytes."""
        question = key[0]
        labels, qtype, qclass = question_name(question)
        zones = self.runtime.snapshot.zones
        found = lookup(zones, labels_to_key(labels), qtype, qclass)
        if found.rcode not in (NOERROR, NXDOMAIN) or found.geo is not None or found.answer or found.additional or found.referral:
            return None
        if found.rum is not None:
            return None  # every token query is answered by the full path, which records it
        if zones.zones[found.zone].dnssec is not None and (key[4] or qtype in OWN_RECORD_TYPES):
            return None  # signed denial, and NSEC and RRSIG answers, name the name asked: no sharing between names
        if len(found.authority) != 1 or found.authority[0].rtype != "SOA":
            return None
        return found.zone, found.rcode, qtype, len(question), key[1:]

    def _full(self, data: bytes, host: str, tcp: bool, fill: Fill | None, negative: NegativeKey | None = None) -> bytes | None:
        """The full path: dnslib parse, lookup, answer, encode; its answer may fill the packet cache."""
        try:
            parsed = wire.parse_query(data)
            peer = peer_address(host)
        except wire.WireError as exc:
            self.stats.dropped += 1
            self._client_error(exc.kind, host, str(exc))
            return None
        except ValueError:
            self.stats.dropped += 1
            return None
        if isinstance(parsed, wire.Rejection):
            rejected = parsed.query
            if parsed.kind:
                self._client_error(parsed.kind, host, f"answered {model.RCODE_NAMES.get(parsed.rcode, parsed.rcode)}")
            cookie, valid = self._cookie(rejected, host)
            rcode = parsed.rcode
            if rcode == NOERROR and not rejected.question:  # a query for a server cookie alone (RFC 7873 §5.4)
                rcode = NOERROR if valid else BADCOOKIE
            self.stats.count(QueryKey("", rejected.qtype, rcode), None)
            return self._encode(rejected, Answer(rcode, False), tcp, cookie)
        query = parsed
        cookie, _valid = self._cookie(query, host)
        try:
            snapshot = self.runtime.snapshot
            found = lookup(snapshot.zones, query.name, query.qtype, query.qclass)
            if found.rum is not None:
                found = self._rum(found, found.rum, query, peer)
                fill = None  # never cached: each lookup of a token is a sighting
            client = client_address(query, peer)
            geo = self.geo(snapshot)
            answer = build_answer(found, client, snapshot.zones, geo, self.rng, resolver=client is peer)
            dnssec_ok = query.edns is not None and query.edns.do and snapshot.zones.signed
            own_records = snapshot.zones.signed and query.qtype in OWN_RECORD_TYPES
            if own_records:
                answer = self.signer.own_records(answer, query.name, query.qtype, snapshot.zones)
            if dnssec_ok:
                answer = self.signer.sign_reply(answer, query.name, snapshot.zones)
            signed = dnssec_ok or own_records  # holds signatures (an RRSIG query's answer, DO or not)
            stats_key = QueryKey(found.zone, query.qtype, answer.rcode)
            choice = answer.choice
            counted, kind = None, None
            if choice is not None and choice.region is not None:
                counted = (choice.pool, choice.region.name, choice.tier)
                kind = choice.evidence if snapshot.zones.pools[choice.pool].steering == "latency" else None
            self.stats.count(stats_key, counted, 1, kind)
            response = self._encode(query, answer, tcp, cookie)
            if fill is not None and response is not None and snapshot is self.runtime.snapshot:
                limit = query.response_limit(tcp)
                common, packet = query, response
                if cookie is not None:
                    # Entries serve everyone; handle() adds each client's own cookie to what they give.
                    assert query.edns is not None
                    common = dataclasses.replace(query, edns=dataclasses.replace(query.edns, cookie=None))
                    limit -= RESPONSE_OPTION_SIZE
                    packet = wire.to_wire(common, answer, limit)
                entry = self._entry(common, answer, packet, fill, geo, stats_key, limit)
                if entry is not None:
                    cache, key, qend, ecs_at, cookie_at = fill
                    if negative is not None and isinstance(entry, StaticEntry):
                        cache.negatives[negative] = entry
                    else:
                        cache.put(key, entry)
                    cache.remember(data, tcp, entry, qend, ecs_at, cookie_at)
                    if signed:
                        refresh = min((z.dnssec.refresh for z in snapshot.zones.zones.values() if z.dnssec), default=0)
                        self.signed_cached_until = min(self.signed_cached_until, time.time() + refresh)
            return response
        except Exception:
            # A bug must cost one answer, not the server.
            log.exception("internal error answering %s type %d", query.name, query.qtype)
            self.stats.count(QueryKey("", query.qtype, SERVFAIL), None)
            return self._encode(query, Answer(SERVFAIL, False), tcp, cookie)

    def _rum(self, found: Lookup, target: RumTarget, query: wire.Query, peer: IPAddress) -> Lookup:
        """A name under a zone's rum name: the RUM listener's addresses of the queried family for a token
        (NODATA for other types, and for the rum name itself), and a Sighting of the token."""
        if target.token:
            edns = query.edns
            network = edns.ecs.network if edns is not None and edns.ecs is not None and edns.ecs.source > 0 else None
            if network is not None and network.prefixlen > (cut := 24 if network.version == 4 else 48):
                network = network.supernet(new_prefix=cut)  # a network, never a client's own address (privacy)
            if len(self.sightings) < MAX_SIGHTINGS:
                self.sightings.append(Sighting(target.token, peer, network, time.monotonic()))
            else:
                self.stats.sightings_dropped += 1
        return rum_answer(found, target, self.rum_addresses)

    def take_sightings(self) -> list[Sighting]:
        """The sightings since the last call (the worker sends them to the main process's TokenBook)."""
        taken, self.sightings = self.sightings, []
        return taken

    def _client_error(self, kind: str, host: str, detail: str) -> None:
        self.stats.client_errors[kind] += 1
        self.client_errors.note(kind, host, detail)

    def _cookie(self, query: wire.Query, host: str) -> tuple[bytes | None, bool]:
        """The COOKIE option data for the response (None when the query had none), and whether its server cookie was valid."""
        if query.edns is None or query.edns.cookie is None:
            return None, False
        option, valid = self.cookies.answer(query.edns.cookie, host)
        self._cookie_ok = valid
        return option[4:], valid

    def _entry(
        self, query: wire.Query, answer: Answer, response: bytes, fill: Fill, geo: GeoAnswers, stats_key: QueryKey, limit: int
    ) -> StaticEntry | GeoEntry | None:
        """A cache entry made from this answer, for every client that asks the same question."""
        qend = fill[2]
        opt_rdlen = _opt_rdlen(query)
        choice = answer.choice
        if choice is None or choice.region is None:  # static, or NODATA: the same for everyone
            return static_entry(response, qend, opt_rdlen, stats_key)
        zones = self.runtime.snapshot.zones
        records_in_answer = answer.answer
        signature = records_in_answer[-1] if len(records_in_answer) == 2 and records_in_answer[1].rtype == "RRSIG" else None
        if signature is not None:
            records_in_answer = records_in_answer[:1]  # signed: each region's RRSIG is made for its records below
        geo_rrset = records_in_answer[-1] if records_in_answer else None
        if len(records_in_answer) != 1 or geo_rrset is None or geo_rrset.name != query.name or answer.authority or answer.additional:
            return None  # a GEO answer behind a CNAME: the full path answers it every time
        pool = zones.pools[choice.pool]
        choices = geo.pool_family(pool, choice.family)
        # One encoding with every endpoint of the family, cut into one record per address; each
        # region's answer is then those records (no region's packet is encoded on its own).
        addresses = list(dict.fromkeys(e.address for candidates in choices.candidates for e in candidates))
        rrset = dataclasses.replace(geo_rrset, rdatas=tuple(model.address_rdata(a) for a in addresses))
        try:
            packet = wire.to_wire(query, dataclasses.replace(answer, answer=(rrset,), ecs_scope=0), wire.TCP_SIZE)
        except Exception:
            return None
        cut = cut_records(packet, qend, 4 if choice.family == 4 else 16, len(addresses))
        if cut is None or packet[8:10] != b"\x00\x00":
            return None
        records, end = cut
        opt_head: bytes | None = None
        if opt_rdlen is not None:
            if opt_offset(packet, opt_rdlen) != end:
                return None
            opt_head = packet[end : end + 9]
        elif end != len(packet):
            return None
        record_of = dict(zip(addresses, records, strict=True))
        fixed = qend + (len(packet) - end) + ECS_LONGEST  # header, question, OPT with the longest ECS echo
        regions: list[RegionRecords | None] = []
        zone = zones.find_zone(geo_rrset.name) if signature is not None else None  # an RRSIG: the zone is signed
        signature_size = 0 if signature is None else len(rrsig_records(signature))
        for candidates, order in zip(choices.candidates, choices.orders, strict=True):
            if not candidates or order is None:
                regions.append(None)
                continue
            mine = [record_of[e.address] for e in candidates]
            if fixed + sum(len(r) for r in mine) + signature_size > limit:
                return None  # near the client's size limit: the full path truncates as it must
            sign = None if zone is None else self._region_signatures(zone, geo_rrset, candidates)
            regions.append(RegionRecords(packet[2:4], 0 if opt_rdlen is None else 1, mine, order, answer.max_answers, sign))
        return GeoEntry(choices, regions, opt_head, stats_key, self._peer_address)

    def _region_signatures(
        self, zone: model.Zone, rrset: model.RRset, candidates: Sequence[model.Endpoint]
    ) -> Callable[[Sequence[int]], tuple[int, bytes]]:
        """For a region of a signed GEO entry: (count, RRSIG records) over the endpoints at these indices,
        the same whatever their order (made by the Signer, which keeps them until their refresh)."""
        memo: dict[frozenset[int], tuple[int, bytes]] = {}
        signer = self.signer

        def signatures(indices: Sequence[int]) -> tuple[int, bytes]:
            chosen = frozenset(indices)
            known = memo.get(chosen)
            if known is None:
                if len(memo) >= SIGNED_SETS:
                    memo.clear()
                rdatas = tuple(model.address_rdata(candidates[i].address) for i in sorted(chosen))
                rrsig = signer.rrsig(dataclasses.replace(rrset, rdatas=rdatas), zone)
                known = memo[chosen] = (len(rrsig.rdatas), rrsig_records(rrsig))
            return known

        return signatures

    def _encode(self, query: wire.Query, answer: Answer, tcp: bool, cookie: bytes | None = None) -> bytes | None:
        try:
            return wire.to_wire(query, answer, query.response_limit(tcp), self.nsid, cookie)
        except Exception:
            log.exception("cannot encode the answer to %s", query.name)
            return None
