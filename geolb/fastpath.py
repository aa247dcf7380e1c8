"""The common query without dnslib: scan header, question and OPT from bytes; answer from ready packets.

Only plain queries take this path: QUERY opcode, one question with no compression,
at most an EDNS(0) OPT record, nothing trailing. Everything else, and every first
query of a kind, goes through the full path (`handler.py`), whose encoded answer
fills the cache. The cache is dropped whenever the snapshot generation changes, so
it never serves a stale zone or region. GEO answers keep their per-query weighted
random order: the cached packet is cut into one slice per endpoint record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPT = 41
ECS = 8
CLASSIC_UDP = 512
EDNS_UDP = 1232
TCP_LIMIT = 65535
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
        return (question, flags, TCP_LIMIT if tcp else CLASSIC_UDP, False, False, None), qend, True
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
        if code == ECS:
            if ecs is not None:
                return None  # two ECS options: FORMERR, the full path says so
            ecs = data[offset + 4 : end]
        offset = end
    limit = TCP_LIMIT if tcp else max(CLASSIC_UDP, min(udp, EDNS_UDP))
    by_peer = ecs is None or len(ecs) < 3 or ecs[2] == 0
    return (question, flags, limit, True, do, ecs), qend, by_peer


@dataclass(frozen=True)
class StaticEntry:
    """A whole response but its ID and question (the client's case goes back as sent)."""

    packet: bytes
    stats: tuple[str, int, int]

    def respond(self, query: bytes, qend: int, rng: random.Random) -> bytes:
        packet = self.packet
        return query[:2] + packet[2:12] + query[12:qend] + packet[qend:]


@dataclass(frozen=True)
class GeoEntry:
    """A GEO answer: header, one record per candidate endpoint, and what follows them."""

    head: bytes  # bytes 2..6 of the header (flags, QDCOUNT)
    counts_tail: bytes  # NSCOUNT and ARCOUNT
    records: tuple[bytes, ...]  # one per candidate, in candidate order
    weights: tuple[int, ...]
    equal_weights: bool
    max_answers: int | None
    tail: bytes  # authority, additional and OPT
    stats: tuple[str, int, int]
    geo: tuple[str, str, bool]  # pool, region, failed open

    def respond(self, query: bytes, qend: int, rng: random.Random) -> bytes:
        records = self.records
        count = len(records)
        limit = count if self.max_answers is None else min(count, self.max_answers)
        if count == 1:
            chosen: list[bytes] | tuple[bytes, ...] = records
        elif self.equal_weights:
            chosen = rng.sample(records, limit)
        else:
            keyed = sorted(range(count), key=lambda i: rng.random() ** (1.0 / self.weights[i]), reverse=True)
            chosen = [records[i] for i in keyed[:limit]]
        return b"".join((query[:2], self.head, len(chosen).to_bytes(2, "big"), self.counts_tail, query[12:qend], *chosen, self.tail))


Entry = StaticEntry | GeoEntry


class PacketCache:
    """Ready answers for one snapshot generation; per-peer ones live under their key in a second table."""

    def __init__(self) -> None:
        self.generation = -1
        self.entries: dict[Key, Entry] = {}
        self.by_peer: dict[tuple[Key, str], Entry] = {}
        self.peer_keys: set[Key] = set()  # keys whose answer turned out to depend on the peer

    def reset(self, generation: int) -> None:
        self.generation = generation
        self.entries = {}
        self.by_peer = {}
        self.peer_keys = set()

    def get(self, key: Key, peer: str, by_peer: bool) -> Entry | None:
        if by_peer and key in self.peer_keys:
            return self.by_peer.get((key, peer))
        return self.entries.get(key)

    def put(self, key: Key, peer: str, depends_on_peer: bool, entry: Entry) -> None:
        if len(self.entries) + len(self.by_peer) >= CACHE_LIMIT:
            self.reset(self.generation)
        if depends_on_peer:
            self.peer_keys.add(key)
            self.by_peer[(key, peer)] = entry
        else:
            self.entries[key] = entry


def geo_entry(packet: bytes, qend: int, rrsizes: tuple[int, ...], weights: tuple[int, ...], max_answers: int | None,
              stats: tuple[str, int, int], geo: tuple[str, str, bool]) -> GeoEntry | None:  # fmt: skip
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
    eligible = [i for i, w in enumerate(weights) if w > 0] or list(range(len(weights)))
    kept = tuple(records[i] for i in eligible)
    kept_weights = tuple(max(weights[i], 1) for i in eligible)
    return GeoEntry(
        head=packet[2:6],
        counts_tail=packet[8:12],
        records=kept,
        weights=kept_weights,
        equal_weights=len(set(kept_weights)) == 1,
        max_answers=max_answers,
        tail=packet[offset:],
        stats=stats,
        geo=geo,
    )
