"""The common query without dnslib: scan header, question and OPT from bytes; answer from ready templates.

Only plain queries take this path: QUERY opcode, one question with no compression,
at most an EDNS(0) OPT record with a well-formed ECS option, nothing trailing.
Everything else, and the first query of each kind in a generation, goes through the
full path (`handler.py`), whose encoded answer fills the cache. The cache is dropped
whenever the snapshot generation changes, so it never serves a stale zone or region.

Entries do not depend on the client: the key leaves the ECS address out, and a GEO
entry holds every region's records, picking the region per query from the pool's
AnswerMap (one bisect). So a client network never seen before costs what a known
one costs. The response's OPT is rebuilt per query, echoing the query's ECS option
with the scope that holds for the answer.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence

from geolb.geo.choose import PoolFamily
from geolb.geo.select import every_order, weighted_indices
from geolb.wire import ECS_OPTION, OPT, response_limit

CACHE_LIMIT = 50_000  # exact query bytes remembered per generation; past it that table starts over
ECS_LONGEST = 4 + 4 + 16  # option code, length, family/source/scope and a whole IPv6 address

# (question in lower case, RD and CD bits, response size limit, EDNS present, DO bit, ECS present)
Key = tuple[bytes, int, int, bool, bool, bool]


def scan(data: bytes, tcp: bool) -> tuple[Key, int, int] | None:
    """(cache key, end of question, offset of the ECS option data or -1) for a plain query, else None."""
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
        return (question, flags, response_limit(None, tcp), False, False, False), qend, -1
    # One additional record: it must be a well-formed EDNS(0) OPT at the root.
    if size < qend + 11 or data[qend] != 0 or data[qend + 1] != 0 or data[qend + 2] != OPT or data[qend + 6] != 0:
        return None
    udp = (data[qend + 3] << 8) | data[qend + 4]
    do = bool(data[qend + 7] & 0x80)
    rdlen = (data[qend + 9] << 8) | data[qend + 10]
    offset = qend + 11
    if offset + rdlen != size:
        return None
    ecs_at = -1
    while offset < size:
        if offset + 4 > size:
            return None
        code = (data[offset] << 8) | data[offset + 1]
        length = (data[offset + 2] << 8) | data[offset + 3]
        end = offset + 4 + length
        if end > size:
            return None
        if code == ECS_OPTION:
            if ecs_at >= 0 or not _plain_ecs(data, offset + 4, length):
                return None  # two ECS options, or a malformed one: FORMERR, the full path says so
            ecs_at = offset + 4
        offset = end
    return (question, flags, response_limit(udp, tcp), True, do, ecs_at >= 0), qend, ecs_at


def _plain_ecs(data: bytes, at: int, length: int) -> bool:
    """RFC 7871 §6: a known family, a source prefix that fits, exactly its bytes, no bits set past it."""
    if length < 4 or data[at] != 0 or data[at + 1] not in (1, 2):
        return False
    source = data[at + 2]
    if source > (32 if data[at + 1] == 1 else 128) or data[at + 3] > (32 if data[at + 1] == 1 else 128):
        return False
    size = (source + 7) >> 3
    if length != 4 + size:
        return False
    return size == 0 or not data[at + 3 + size] & (0xFF >> (source - 8 * (size - 1)))


# OPT RDLENGTH, option code and option length of an ECS echo, by source prefix length.
_ECS_HEAD = [(8 + (n + 7) // 8).to_bytes(2, "big") + b"\x00\x08" + (4 + (n + 7) // 8).to_bytes(2, "big") for n in range(129)]
_BYTE = [bytes((n,)) for n in range(256)]


def _ecs_echo(query: bytes, ecs_at: int, scope: int) -> bytes:
    """The OPT RDLENGTH and the ECS option of a response: the query's option with our SCOPE PREFIX-LENGTH."""
    source = query[ecs_at + 2]
    return b"".join((_ECS_HEAD[source], query[ecs_at : ecs_at + 3], _BYTE[scope], query[ecs_at + 4 : ecs_at + 4 + ((source + 7) >> 3)]))


class StaticEntry:
    """A response that is the same for every client, but for ID, question case and the ECS echo (scope 0)."""

    __slots__ = ("body", "geo", "head", "hits", "opt_head", "stats", "tail_plain")

    def __init__(self, packet: bytes, qend: int, opt_at: int | None, stats: tuple[str, int, int]) -> None:
        self.head = packet[2:12]  # flags and counts
        self.body = packet[qend:opt_at] if opt_at is not None else packet[qend:]  # the records before OPT
        self.opt_head = packet[opt_at : opt_at + 9] if opt_at is not None else b""  # OPT up to its RDLENGTH
        self.tail_plain = packet[qend:]
        self.stats = stats
        self.geo: tuple[str, str, bool] | None = None
        self.hits = 0  # answers given from here since the last fold into QueryStats

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes:
        self.hits += 1
        if ecs_at < 0:
            return query[:2] + self.head + query[12:qend] + self.tail_plain
        return b"".join((query[:2], self.head, query[12:qend], self.body, self.opt_head, _ecs_echo(query, ecs_at, 0)))


class GeoEntry:
    """A GEO answer for any client: per region, its records in every order (or per query, weighted)."""

    __slots__ = (
        "_lookup",
        "_lookup4",
        "_peer_address",
        "choices",
        "counts",
        "hits",
        "names",
        "opt_head",
        "pool",
        "regions",
        "stats",
        "tail_plain",
    )

    def __init__(
        self,
        choices: PoolFamily,
        regions: Sequence[RegionRecords | None],
        opt_head: bytes | None,
        stats: tuple[str, int, int],
        peer_address: Callable[[str], tuple[int, int]],
    ) -> None:
        self.choices = choices
        self.regions = regions  # by region index; None for a region that never answers this family
        self.opt_head = opt_head
        self.tail_plain = b"" if opt_head is None else opt_head + b"\x00\x00"
        self.stats = stats
        self.pool = choices.pool.name
        self.names = tuple(r.name for r in choices.pool.regions)
        self.counts = [0] * len(self.names)  # answers per region since the last fold
        self.hits = 0
        self._peer_address = peer_address
        assert choices.answers is not None
        self._lookup = choices.answers.lookup
        self._lookup4 = choices.answers.lookup4

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes:
        source = query[ecs_at + 2] if ecs_at >= 0 else 0
        if source:
            end = ecs_at + 4 + ((source + 7) >> 3)
            value = int.from_bytes(query[ecs_at + 4 : end], "big")
            if query[ecs_at + 1] == 1:
                index, scope = self._lookup4(value << (32 - 8 * (end - ecs_at - 4)))
            else:
                index, scope = self._lookup(value << (128 - 8 * (end - ecs_at - 4)), 6)
            # The OPT RDLENGTH and ECS option: the query's, with our SCOPE PREFIX-LENGTH (see _ecs_echo).
            echo = b"".join(
                (_ECS_HEAD[source], query[ecs_at : ecs_at + 3], _BYTE[scope if scope < source else source], query[ecs_at + 4 : end])
            )
        else:
            version, value = self._peer_address(peer)
            index, _scope = self._lookup(value, version)
            echo = b"\x00\x00" if ecs_at < 0 else _ecs_echo(query, ecs_at, 0)
        self.counts[index] += 1
        records = self.regions[index]
        assert records is not None
        variants = records.variants
        if variants:
            head, answers = variants[0] if len(variants) == 1 else variants[int(rng.random() * len(variants))]
        else:
            head, answers = records.pick(rng)
        if self.opt_head is None:
            return b"".join((query[:2], head, query[12:qend], answers))
        return b"".join((query[:2], head, query[12:qend], answers, self.opt_head, echo))

    def pinned(self, query: bytes, qend: int, ecs_at: int) -> PinnedEntry | None:
        """A ready entry for these exact query bytes (ECS address and all), when its region has fixed orders."""
        source = query[ecs_at + 2]
        size = (source + 7) >> 3
        value = int.from_bytes(query[ecs_at + 4 : ecs_at + 4 + size], "big")
        if query[ecs_at + 1] == 1:
            index, scope = self.choices.choose(value << (32 - 8 * size), 4)
        else:
            index, scope = self.choices.choose(value << (128 - 8 * size), 6)
        records = self.regions[index]
        if records is None or not records.variants or self.opt_head is None:
            return None
        echo = self.opt_head + _ecs_echo(query, ecs_at, scope if scope < source else source)
        return PinnedEntry(records.variants[0][0], tuple(answers + echo for _head, answers in records.variants), self.counts, index)


class PinnedEntry:
    """One GEO entry's answer for one exact query (its ECS address fixed): ready packets, counted on the parent."""

    __slots__ = ("counts", "head", "index", "tails")

    def __init__(self, head: bytes, tails: tuple[bytes, ...], counts: list[int], index: int) -> None:
        self.head = head
        self.tails = tails
        self.counts = counts
        self.index = index

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes:
        self.counts[self.index] += 1
        tails = self.tails
        return query[:2] + self.head + query[12:qend] + (tails[0] if len(tails) == 1 else tails[int(rng.random() * len(tails))])


class RegionRecords:
    """One region's answer records: all orders ready when they are equally likely, else ordered per query."""

    __slots__ = ("_tail", "flags", "max_answers", "records", "variants", "weights")

    def __init__(self, flags: bytes, arcount: int, records: Sequence[bytes], weights: Sequence[int], max_answers: int | None) -> None:
        self.flags = flags
        self.records = tuple(records)
        self.weights = tuple(weights)
        self.max_answers = max_answers
        orders = every_order(self.weights, max_answers)
        tail = b"\x00\x00" + arcount.to_bytes(2, "big")
        self.variants: tuple[tuple[bytes, bytes], ...] = ()
        if orders is not None:
            self.variants = tuple(
                (flags + b"\x00\x01" + len(order).to_bytes(2, "big") + tail, b"".join(self.records[i] for i in order)) for order in orders
            )
        self._tail = tail

    def pick(self, rng: random.Random) -> tuple[bytes, bytes]:
        variants = self.variants
        if variants:
            return variants[0] if len(variants) == 1 else variants[int(rng.random() * len(variants))]
        chosen = weighted_indices(self.weights, self.max_answers, rng)
        return self.flags + b"\x00\x01" + len(chosen).to_bytes(2, "big") + self._tail, b"".join(self.records[i] for i in chosen)


Entry = StaticEntry | GeoEntry | PinnedEntry


class Shape:
    """A scanned query with ECS as its last option: a query of the same length whose bytes up to the ECS
    address are the same (`prefix`, after the ID) scans the same, if its address has no bits past the source."""

    __slots__ = ("cut", "ecs_at", "entry", "mask", "prefix", "qend")

    def __init__(self, query: bytes, entry: StaticEntry | GeoEntry, qend: int, ecs_at: int) -> None:
        source = query[ecs_at + 2]
        size = (source + 7) >> 3
        self.cut = ecs_at + 4
        self.prefix = query[2 : self.cut]
        self.mask = 0xFF >> (source - 8 * (size - 1)) if size else 0  # bits of the last byte past the source prefix
        self.entry = entry
        self.qend = qend
        self.ecs_at = ecs_at


class PacketCache:
    """Ready answers for one snapshot generation.

    `exact` maps a query's bytes after its ID (and the transport) straight to its
    entry, so a repeated query skips the scan; below it, `entries` is keyed by the
    scanned question (any case, any client, any extra EDNS options).
    """

    def __init__(self) -> None:
        self.generation = -1
        self.exact: dict[tuple[bytes, bool], tuple[Entry, int, int]] = {}  # -> (entry, end of question, ECS offset)
        self.entries: dict[Key, StaticEntry | GeoEntry] = {}
        # Negative answers (NXDOMAIN, NODATA) by zone, rcode, question length and the rest of the key:
        # their bytes after the question do not depend on the name, so random names share one entry.
        self.negatives: dict[tuple[str, int, int, int, tuple[object, ...]], StaticEntry] = {}
        # The last query with ECS scanned at each (length, transport): most queries differ only in ID and address.
        self.shapes: dict[tuple[int, bool], Shape] = {}
        self.on_drop: Callable[[Sequence[StaticEntry | GeoEntry]], None] | None = None  # folds hits before entries go

    @property
    def live(self) -> list[StaticEntry | GeoEntry]:
        return [*self.entries.values(), *self.negatives.values()]

    def reset(self, generation: int) -> None:
        if self.on_drop is not None:
            self.on_drop(self.live)
        self.generation = generation
        self.exact = {}
        self.entries = {}
        self.negatives = {}
        self.shapes = {}

    def put(self, key: Key, entry: StaticEntry | GeoEntry) -> None:
        if len(self.entries) >= CACHE_LIMIT:
            self.reset(self.generation)  # only a flood of distinct questions gets here
        self.entries[key] = entry

    def learn_shape(self, query: bytes, tcp: bool, entry: StaticEntry | GeoEntry, qend: int, ecs_at: int) -> None:
        if ecs_at + 4 + ((query[ecs_at + 2] + 7) >> 3) == len(query):  # ECS is the last thing in the query
            self.shapes[(len(query), tcp)] = Shape(query, entry, qend, ecs_at)

    def remember(self, query: bytes, tcp: bool, entry: Entry, qend: int, ecs_at: int) -> None:
        """Answer these exact bytes with `entry` from now on."""
        if len(self.exact) >= CACHE_LIMIT:
            self.exact = {}
        self.exact[(query[2:], tcp)] = (entry, qend, ecs_at)


def question_name(question: bytes) -> tuple[list[bytes], int, int]:
    """The labels, type and class of a scanned question (the name already lower-cased and checked)."""
    labels = []
    offset = 0
    while question[offset]:
        length = question[offset]
        labels.append(question[offset + 1 : offset + 1 + length])
        offset += 1 + length
    return labels, (question[-4] << 8) | question[-3], (question[-2] << 8) | question[-1]


def static_entry(packet: bytes, qend: int, opt_rdlen: int | None, stats: tuple[str, int, int]) -> StaticEntry | None:
    """Cut a full-path response into an entry (`opt_rdlen`: the size of its OPT's data, None without EDNS)."""
    if opt_rdlen is None:
        return StaticEntry(packet, qend, None, stats)
    opt_at = opt_offset(packet, opt_rdlen)
    return None if opt_at is None else StaticEntry(packet, qend, opt_at, stats)


def opt_offset(packet: bytes, rdlen: int) -> int | None:
    """Where the OPT record starts: our encoder puts it last, so it is the packet's last 11 + `rdlen` bytes."""
    at = len(packet) - 11 - rdlen
    if at < 12 or packet[at : at + 3] != b"\x00\x00\x29" or int.from_bytes(packet[at + 9 : at + 11], "big") != rdlen:
        return None
    return at


def cut_records(packet: bytes, qend: int, rdlen: int, count: int) -> tuple[list[bytes], int] | None:
    """The `count` address records that follow the question, each owned by the question name; and where they end."""
    offset = qend
    records = []
    for _ in range(count):
        end = offset + 12 + rdlen
        if (
            end > len(packet)
            or packet[offset : offset + 2] != b"\xc0\x0c"
            or int.from_bytes(packet[offset + 10 : offset + 12], "big") != rdlen
        ):
            return None
        records.append(packet[offset:end])
        offset = end
    return records, offset


def peer_address_cache() -> Callable[[str], tuple[int, int]]:
    """host text -> (IP version, address as int), remembered: the peer of a query without ECS is the client."""
    known: dict[str, tuple[int, int]] = {}

    def lookup(host: str) -> tuple[int, int]:
        found = known.get(host)
        if found is None:
            address = ipaddress.ip_address(host.partition("%")[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if len(known) >= CACHE_LIMIT:
                known.clear()
            found = known[host] = (address.version, int(address))
        return found

    return lookup
