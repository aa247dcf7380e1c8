"""The common query without dnslib: scan header, question and OPT from bytes; answer from ready packets.

Only plain queries take this path: QUERY opcode, one question with no compression,
at most an EDNS(0) OPT record, nothing trailing. Everything else, and every first
query of a kind, goes through the full path (`handler.py`), whose encoded answer
fills the cache. The cache is dropped whenever the snapshot generation changes, so
it never serves a stale zone or region. GEO answers keep their per-query weighted
random order: the cached packet is cut into one slice per endpoint record.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

from geolb.geo.rank import standby_aware, weighted_indices
from geolb.wire import ECS_OPTION, OPT, response_limit

CACHE_LIMIT = 50_000  # packets per generation; past it the cache starts over

# (question in lower case, RD and CD bits, response size limit, EDNS present, DO bit, ECS option data)
Key = tuple[bytes, int, int, bool, bool, bytes | None]


def scan(data: bytes, tcp: bool) -> tuple[Key, int, bool] | None:
    """(cache key, end of question, answer depends on the peer) for a plain query, else None.

    The peer matters only without an ECS address: then the sender is the client.
    """
    size = len(data)
    if size < 17 or data[2] & 0xF8 or data[4:12] not in (b"\x00\x01\x00\x00\x00\x00\x00\x00", b"\x00\x01\x00\x00\x00\x00\x00\x01"):
        return None  # a response, another opcode, QDCOUNT != 1, answer/authority records
    offset = 12
    while True:
        length = data[offset] if offset < size else 256
        if length == 0:
            break
        if length > 63:
            return None  # a compression pointer, or past the end
        offset += length + 1
        if offset - 12 > 254:
            return None
    qend = offset + 5
    if qend > size or not data[12:offset].isascii():
        return None  # short, or a name with non-ASCII bytes: the full path decides
    flags = (data[2] & 0x01) | (data[3] & 0x10)
    question = data[12:offset].lower() + data[offset:qend]  # only the name is case-blind
    if data[11] == 0:
        if qend != size:
            return None
        return (question, flags, response_limit(None, tcp), False, False, None), qend, True
    # One additional record: it must be a well-formed EDNS(0) OPT at the root.
    if size < qend + 11 or data[qend] != 0 or data[qend + 1] != 0 or data[qend + 2] != OPT or data[qend + 6] != 0:
        return None
    udp = (data[qend + 3] << 8) | data[qend + 4]
    do = bool(data[qend + 7] & 0x80)
    rdlen = (data[qend + 9] << 8) | data[qend + 10]
    offset = qend + 11
    if offset + rdlen != size:
        return None
    ecs: bytes | None = None
    while offset < size:
        if offset + 4 > size:
            return None
        code = (data[offset] << 8) | data[offset + 1]
        length = (data[offset + 2] << 8) | data[offset + 3]
        end = offset + 4 + length
        if end > size:
            return None
        if code == ECS_OPTION:
            if ecs is not None:
                return None  # two ECS options: FORMERR, the full path says so
            ecs = data[offset + 4 : end]
        offset = end
    limit = response_limit(udp, tcp)
    by_peer = ecs is None or len(ecs) < 3 or ecs[2] == 0
    return (question, flags, limit, True, do, ecs), qend, by_peer


class StaticEntry:
    """Whole responses but their ID and question (the client's case goes back as sent).

    Usually one; a GEO answer with equal weights keeps every order (or every choice
    of `max_answers`) of its records, and each query picks one at random.
    """

    __slots__ = ("geo", "hits", "packets", "stats")

    def __init__(self, packets: tuple[bytes, ...], stats: tuple[str, int, int], geo: tuple[str, str, bool] | None = None) -> None:
        self.packets = packets
        self.stats = stats
        self.geo = geo  # pool, region, failed open
        self.hits = 0  # answers given from here since the last fold into QueryStats

    def respond(self, query: bytes, qend: int, rng: random.Random) -> bytes:
        self.hits += 1
        packets = self.packets
        packet = packets[0] if len(packets) == 1 else packets[int(rng.random() * len(packets))]
        return query[:2] + packet[2:12] + query[12:qend] + packet[qend:]


class GeoEntry:
    """A GEO answer with unequal weights: header, one record per candidate, and what follows them."""

    __slots__ = ("counts_tail", "geo", "head", "hits", "max_answers", "records", "stats", "tail", "weights")

    def __init__(self, head: bytes, counts_tail: bytes, records: tuple[bytes, ...], weights: tuple[int, ...], max_answers: int | None,
                 tail: bytes, stats: tuple[str, int, int], geo: tuple[str, str, bool]) -> None:  # fmt: skip
        self.head = head  # bytes 2..6 of the header (flags, QDCOUNT)
        self.counts_tail = counts_tail  # NSCOUNT and ARCOUNT
        self.records = records  # one per candidate, in candidate order
        self.weights = weights
        self.max_answers = max_answers
        self.tail = tail  # authority, additional and OPT
        self.stats = stats
        self.geo = geo
        self.hits = 0

    def respond(self, query: bytes, qend: int, rng: random.Random) -> bytes:
        self.hits += 1
        records = self.records
        chosen = [records[i] for i in weighted_indices(self.weights, self.max_answers, rng)]
        return b"".join((query[:2], self.head, len(chosen).to_bytes(2, "big"), self.counts_tail, query[12:qend], *chosen, self.tail))


Entry = StaticEntry | GeoEntry


class PacketCache:
    """Ready answers for one snapshot generation.

    `exact` maps a query's bytes after its ID (and the transport) straight to an
    answer that does not depend on the peer, so a repeated query costs one
    dictionary lookup; `exact_by_peer` does the same per peer for answers that do.
    Below them, `entries` is keyed by the scanned question (any case, any extra
    EDNS options); answers that depend on the peer live in `by_peer`.
    """

    def __init__(self) -> None:
        self.generation = -1
        self.exact: dict[tuple[bytes, bool], tuple[Entry, int]] = {}  # -> (answer, end of question)
        self.exact_by_peer: dict[tuple[bytes, bool, str], tuple[Entry, int]] = {}
        self.entries: dict[Key, Entry] = {}
        self.by_peer: dict[tuple[Key, str], Entry] = {}
        self.peer_keys: set[Key] = set()  # keys whose answer turned out to depend on the peer
        self.live: list[Entry] = []
        self.on_drop: Callable[[list[Entry]], None] | None = None  # folds hits before entries go

    def reset(self, generation: int) -> None:
        if self.on_drop is not None:
            self.on_drop(self.live)
        self.generation = generation
        self.exact = {}
        self.exact_by_peer = {}
        self.entries = {}
        self.by_peer = {}
        self.peer_keys = set()
        self.live = []  # every entry made this generation, for folding their hits

    def get(self, key: Key, peer: str, by_peer: bool) -> tuple[Entry | None, str | None]:
        """The answer for `key`, and the peer it was kept under (None: it does not depend on the peer)."""
        if by_peer and key in self.peer_keys:
            return self.by_peer.get((key, peer)), peer
        return self.entries.get(key), None

    def put(self, key: Key, peer: str, depends_on_peer: bool, entry: Entry) -> None:
        if len(self.entries) + len(self.by_peer) >= CACHE_LIMIT:
            self.reset(self.generation)
        self.live.append(entry)
        if depends_on_peer:
            self.peer_keys.add(key)
            self.by_peer[(key, peer)] = entry
        else:
            self.entries[key] = entry

    def remember(self, query: bytes, qend: int, tcp: bool, entry: Entry, peer: str | None = None) -> None:
        """Answer these exact bytes (from `peer`, for an answer that depends on it) with `entry` from now on."""
        if len(self.exact) + len(self.exact_by_peer) >= CACHE_LIMIT:
            self.exact = {}
            self.exact_by_peer = {}
        if peer is None:
            self.exact[(query[2:], tcp)] = (entry, qend)
        else:
            self.exact_by_peer[(query[2:], tcp, peer)] = (entry, qend)


MAX_VARIANTS = 120  # every order of up to 5 records


def geo_entry(packet: bytes, qend: int, rrsizes: tuple[int, ...], weights: tuple[int, ...], max_answers: int | None,
              stats: tuple[str, int, int], geo: tuple[str, str, bool]) -> Entry | None:  # fmt: skip
    """Cut a GEO answer encoded with every candidate, in order, into its records.

    Returns None unless the answer section is exactly those records, each owned by
    the question name (a compression pointer to offset 12).
    """
    offset = qend
    records = []
    for rdlen in rrsizes:
        end = offset + 12 + rdlen
        if end > len(packet) or packet[offset : offset + 2] != b"\xc0\x0c":
            return None
        if (packet[offset + 10] << 8) | packet[offset + 11] != rdlen:
            return None
        records.append(packet[offset:end])
        offset = end
    if int.from_bytes(packet[6:8], "big") != len(records):
        return None
    eligible = standby_aware(weights)
    kept = [records[i] for i in eligible]
    kept_weights = tuple(weights[i] for i in eligible)
    tail = packet[offset:]
    limit = len(kept) if max_answers is None else min(len(kept), max_answers)
    if len(set(kept_weights)) == 1 and math.perm(len(kept), limit) <= MAX_VARIANTS:
        # Equal weights: a uniform pick among all orders is the weighted random order.
        packets = tuple(
            b"".join((packet[:6], limit.to_bytes(2, "big"), packet[8:qend], *order, tail)) for order in itertools.permutations(kept, limit)
        )
        return StaticEntry(packets, stats, geo)
    return GeoEntry(packet[2:6], packet[8:12], tuple(kept), kept_weights, max_answers, tail, stats, geo)
