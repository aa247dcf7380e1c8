"""The packet cache: scan the common query from its bytes, answer it from ready entries. No dnslib, no geo.

Only plain queries take this path: QUERY opcode, one question with no compression,
at most an EDNS(0) OPT record with a well-formed ECS option, nothing trailing.
Everything else, and the first query of each kind in a generation, goes through the
full path (`handler.py`), whose encoded answer fills the cache. The cache is dropped
whenever the snapshot generation changes, so it never serves a stale zone or region.

Entries do not depend on the client: the key leaves the ECS address out. Static and
negative entries live here; GEO entries (geo/entry.py) hold every region's records and
pick the region per query from the pool's AnswerMap, so a client network never seen
before costs what a known one costs. The response's OPT is rebuilt per query, echoing
the query's ECS option with the scope that holds for the answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from geolb.dns.cookies import RESPONSE_OPTION_SIZE, well_formed
from geolb.dns.message import QueryKey
from geolb.dns.wire import COOKIE_OPTION, ECS_OPTION, NSID_OPTION, OPT, response_limit

CACHE_LIMIT = 50_000  # exact query bytes remembered per generation; past it that table starts over
ECS_LONGEST = 4 + 4 + 16  # option code, length, family/source/scope and a whole IPv6 address

# (question in lower case, RD and CD bits, response size limit, EDNS present, DO bit, ECS present, COOKIE present)
Key = tuple[bytes, int, int, bool, bool, bool, bool]


def scan(data: bytes, tcp: bool) -> tuple[Key, int, int, int] | None:
    """(cache key, end of question, offset of the ECS option data or -1, offset of the COOKIE option or -1)
    for a plain query, else None. With a cookie, the key's size limit leaves room for the server cookie
    the answer gets (see QueryHandler.handle)."""
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
    if qend > size:
        return None
    # bytes.lower() folds ASCII alone, as matching must (RFC 4343): a name with other bytes is keyed as sent.
    flags = (data[2] & 0x01) | (data[3] & 0x10)
    question = data[12:offset].lower() + data[offset:qend]  # only the name is case-blind
    if data[11] == 0:
        if qend != size:
            return None
        return (question, flags, response_limit(None, tcp), False, False, False, False), qend, -1, -1
    # One additional record: it must be a well-formed EDNS(0) OPT at the root.
    if size < qend + 11 or data[qend] != 0 or data[qend + 1] != 0 or data[qend + 2] != OPT or data[qend + 6] != 0:
        return None
    udp = (data[qend + 3] << 8) | data[qend + 4]
    do = bool(data[qend + 7] & 0x80)
    rdlen = (data[qend + 9] << 8) | data[qend + 10]
    offset = qend + 11
    if offset + rdlen != size:
        return None
    ecs_at = cookie_at = -1
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
        elif code == NSID_OPTION:
            return None  # "which server are you?": rare, answered by the full path with this server's NSID
        elif code == COOKIE_OPTION:
            if cookie_at >= 0 or not well_formed(length):
                return None  # FORMERR: the full path says so
            cookie_at = offset
        offset = end
    limit = response_limit(udp, tcp)
    if cookie_at >= 0:
        limit -= RESPONSE_OPTION_SIZE
    return (question, flags, limit, True, do, ecs_at >= 0, cookie_at >= 0), qend, ecs_at, cookie_at


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
ECS_HEAD = [(8 + (n + 7) // 8).to_bytes(2, "big") + b"\x00\x08" + (4 + (n + 7) // 8).to_bytes(2, "big") for n in range(129)]
BYTE = [bytes((n,)) for n in range(256)]


def ecs_echo(query: bytes, ecs_at: int, scope: int) -> bytes:
    """The OPT RDLENGTH and the ECS option of a response: the query's option with our SCOPE PREFIX-LENGTH."""
    source = query[ecs_at + 2]
    return b"".join((ECS_HEAD[source], query[ecs_at : ecs_at + 3], BYTE[scope], query[ecs_at + 4 : ecs_at + 4 + ((source + 7) >> 3)]))


class StaticEntry:
    """A response that is the same for every client, but for ID, question case and the ECS echo (scope 0)."""

    __slots__ = ("body", "geo", "head", "hits", "opt_head", "stats", "tail_plain")

    def __init__(self, packet: bytes, qend: int, opt_at: int | None, stats: QueryKey) -> None:
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
        return b"".join((query[:2], self.head, query[12:qend], self.body, self.opt_head, ecs_echo(query, ecs_at, 0)))


class CachedAnswer(Protocol):
    """Anything the cache can answer from: static entries here, GEO entries from geo/entry.py."""

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes: ...


Entry = CachedAnswer


class Shape:
    """A scanned query with ECS as its last option: a query of the same length whose bytes up to the ECS
    address are the same (`prefix`, after the ID) scans the same, if its address has no bits past the source."""

    __slots__ = ("cookie_at", "cut", "ecs_at", "entry", "mask", "prefix", "qend")

    def __init__(self, query: bytes, entry: CachedAnswer, qend: int, ecs_at: int, cookie_at: int) -> None:
        source = query[ecs_at + 2]
        size = (source + 7) >> 3
        self.cut = ecs_at + 4
        self.prefix = query[2 : self.cut]
        self.mask = 0xFF >> (source - 8 * (size - 1)) if size else 0  # bits of the last byte past the source prefix
        self.entry = entry
        self.qend = qend
        self.ecs_at = ecs_at
        self.cookie_at = cookie_at  # before the ECS option, so the same in every query of this shape


class PacketCache:
    """Ready answers for one snapshot generation.

    `exact` maps a query's bytes after its ID (and the transport) straight to its
    entry, so a repeated query skips the scan; below it, `entries` is keyed by the
    scanned question (any case, any client, any extra EDNS options).
    """

    def __init__(self) -> None:
        self.generation = -1
        # -> (entry, end of question, ECS offset, COOKIE offset)
        self.exact: dict[tuple[bytes, bool], tuple[Entry, int, int, int]] = {}
        self.entries: dict[Key, CachedAnswer] = {}
        # Negative answers (NXDOMAIN, NODATA) by zone, rcode, question length and the rest of the key:
        # their bytes after the question do not depend on the name, so random names share one entry.
        self.negatives: dict[tuple[str, int, int, int, tuple[object, ...]], StaticEntry] = {}
        # The last query with ECS scanned at each (length, transport): most queries differ only in ID and address.
        self.shapes: dict[tuple[int, bool], Shape] = {}
        self.on_drop: Callable[[Sequence[CachedAnswer]], None] | None = None  # folds hits before entries go

    @property
    def live(self) -> list[CachedAnswer]:
        return [*self.entries.values(), *self.negatives.values()]

    def reset(self, generation: int) -> None:
        if self.on_drop is not None:
            self.on_drop(self.live)
        self.generation = generation
        self.exact = {}
        self.entries = {}
        self.negatives = {}
        self.shapes = {}

    def put(self, key: Key, entry: CachedAnswer) -> None:
        if len(self.entries) >= CACHE_LIMIT:
            self.reset(self.generation)  # only a flood of distinct questions gets here
        self.entries[key] = entry

    def learn_shape(self, query: bytes, tcp: bool, entry: CachedAnswer, qend: int, ecs_at: int, cookie_at: int) -> None:
        if ecs_at + 4 + ((query[ecs_at + 2] + 7) >> 3) == len(query):  # ECS is the last thing in the query
            self.shapes[(len(query), tcp)] = Shape(query, entry, qend, ecs_at, cookie_at)

    def remember(self, query: bytes, tcp: bool, entry: Entry, qend: int, ecs_at: int, cookie_at: int) -> None:
        """Answer these exact bytes with `entry` from now on."""
        if len(self.exact) >= CACHE_LIMIT:
            self.exact = {}
        self.exact[(query[2:], tcp)] = (entry, qend, ecs_at, cookie_at)


def question_name(question: bytes) -> tuple[list[bytes], int, int]:
    """The labels, type and class of a scanned question (the name already lower-cased and checked)."""
    labels = []
    offset = 0
    while question[offset]:
        length = question[offset]
        labels.append(question[offset + 1 : offset + 1 + length])
        offset += 1 + length
    return labels, (question[-4] << 8) | question[-3], (question[-2] << 8) | question[-1]


def static_entry(packet: bytes, qend: int, opt_rdlen: int | None, stats: QueryKey) -> StaticEntry | None:
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
