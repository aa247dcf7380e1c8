"""dns/cache.py: its scanner agrees with dnslib, and its answers equal the full path's."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import dns.edns
import dns.message
import dns.rrset
import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geolb.config.zoneset import load_zoneset
from geolb.dns import wire
from geolb.dns.cache import scan
from geolb.dns.cookies import RESPONSE_OPTION_SIZE
from geolb.dns.wire import parse_client_subnet
from geolb.dnssec.keys import generate
from geolb.geo.locate import GeoIPLocator
from geolb.handler import QueryHandler
from geolb.runtime import Runtime
from tests.geomaps import region_maps

DATA = Path(__file__).resolve().parent.parent / "data"


def agrees_with_dnslib(data: bytes, tcp: bool) -> None:
    """Whatever the scanner accepts, dnslib parses to the same question and EDNS."""
    scanned = scan(data, tcp)
    if scanned is None:
        return
    (question, flags, limit, has_edns, do, has_ecs, has_cookie), qend, ecs_at, cookie_at = scanned
    parsed = wire.parse_query(data)  # the full path's parser: must not raise, nor reject
    assert isinstance(parsed, wire.Query)
    assert question[:-4] == b"".join(bytes([len(label)]) + label for label in parsed.labels).lower() + b"\x00"
    # dnslib wants UTF-8 labels (RFC 2181 §11 allows any byte): the rest is checked with ASCII in their place.
    name_end = 12 + len(question) - 4
    record = dnslib.DNSRecord.parse(data[:12] + bytes(b if b < 0x80 else 0x78 for b in data[12:name_end]) + data[name_end:])
    assert record.header.qr == 0 and record.header.opcode == 0
    assert len(record.questions) == 1 and not record.rr and not record.auth
    q = record.questions[0]
    assert int.from_bytes(question[-4:-2], "big") == q.qtype
    assert int.from_bytes(question[-2:], "big") == q.qclass
    assert flags == (record.header.rd | (0x10 if record.header.cd else 0))
    opts = [rr for rr in record.ar if rr.rtype == 41]
    assert has_edns == bool(opts) and len(record.ar) == len(opts)
    if opts:
        assert do == bool(opts[0].ttl & 0x8000)
        assert (opts[0].ttl >> 16) & 0xFF == 0
        options = wire.opt_options(data)  # dnslib drops a last option without data
        ecs_options = [option for code, option in options if code == 8]
        cookies = [option for code, option in options if code == 10]
        assert has_cookie == bool(cookies) == (cookie_at >= 0)
        if cookies:
            assert data[cookie_at + 4 : cookie_at + 4 + len(cookies[0])] == cookies[0]
        assert has_ecs == bool(ecs_options) == (ecs_at >= 0)
        if ecs_options:
            assert data[ecs_at : ecs_at + len(ecs_options[0])] == ecs_options[0]
            assert ecs_at + len(ecs_options[0]) <= len(data)
            parse_client_subnet(ecs_options[0])  # the scanner takes only ECS options the full path accepts
        room = RESPONSE_OPTION_SIZE if has_cookie else 0  # the server cookie the answer gets
        assert limit == (65535 if tcp else max(512, min(opts[0].rclass, 1232))) - room
    else:
        assert limit == (65535 if tcp else 512)
    assert qend == 12 + len(question)


def query_bytes(name: str, rdtype: str, edns: bool, ecs: str | None, payload: int, do: bool, cookie: bytes | None = None) -> bytes:
    options = [] if cookie is None else [dns.edns.GenericOption(dns.edns.COOKIE, cookie)]
    if ecs is not None:
        address, _, prefix = ecs.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    options.append(dns.edns.GenericOption(65001, b"\x01"))
    message = dns.message.make_query(
        name, rdtype, use_edns=0 if edns or ecs else False, payload=payload, options=options if edns or ecs else None, want_dnssec=do
    )
    return message.to_wire()


SEEDS = [
    query_bytes("www.example.com", "A", False, None, 512, False),
    query_bytes("WwW.ExAmPlE.cOm", "AAAA", True, "81.2.69.0/24", 4096, True),
    query_bytes("a.b.c.d.example.com", "TXT", True, None, 1232, False),
    query_bytes("x", "MX", True, "2001:db8::/32", 600, False),
    query_bytes("www.example.com", "A", True, "81.2.69.0/24", 1232, True, cookie=bytes(range(24))),
    query_bytes("www.example.com", "A", True, None, 1232, False, cookie=bytes(range(8))),
]


@settings(max_examples=4000, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=3),
    st.integers(0, 90),
    st.binary(max_size=6),
    st.booleans(),
)
def test_scanner_agrees_with_dnslib_on_mutated_queries(
    seed: bytes, changes: list[tuple[int, int]], cut: int, extra: bytes, tcp: bool
) -> None:
    data = bytearray(seed)
    for index, value in changes:
        if index < len(data):
            data[index] = value
    agrees_with_dnslib(bytes(data[: max(cut, len(data) - cut)]) + extra, tcp)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_scanner_agrees_with_dnslib_on_random_bytes(data: bytes, tcp: bool) -> None:
    agrees_with_dnslib(data, tcp)


def test_scanner_accepts_ordinary_queries_and_declines_unusual_ones() -> None:
    assert all(scan(seed, False) is not None for seed in SEEDS)
    notify = dns.message.make_query("example.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert scan(notify.to_wire(), False) is None
    assert scan(dns.message.make_query("example.com", "SOA", use_edns=1).to_wire(), False) is None  # BADVERS: full path
    assert scan(SEEDS[0] + b"\x00", False) is None  # trailing byte


# --- fast answers equal full answers ---------------------------------------------------


def handlers() -> tuple[QueryHandler, QueryHandler]:
    zones = load_zoneset(str(DATA / "zones")).zoneset
    geo_zones = load_zoneset(str(DATA / "geo-zones")).zoneset
    merged = type(zones)(zones={**zones.zones, **geo_zones.zones}, pools={**zones.pools, **geo_zones.pools})
    maps = region_maps(merged, GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb")))
    fast = QueryHandler(Runtime(merged, maps=maps), random.Random(1), fast_path=True)
    full = QueryHandler(Runtime(merged, maps=maps), random.Random(1), fast_path=False)
    return fast, full


NAMES = [
    "example.com", "www.example.com", "WWW.Example.COM", "mail.example.com", "docs.example.com", "nothing.example.com",
    "x.static.example.com", "sub.example.com", "big.example.com", "_sip._udp.example.com", "example.org", "v4.example.com",
    "www.geo.example", "prefs.geo.example", "many.geo.example", "weighted-one.geo.example", "static.geo.example",
    "\\196X.Example.com", "\\255\\128.static.example.com", ".",  # bytes above 0x7f (RFC 2181 §11), the root
]  # fmt: skip
TYPES = ["A", "AAAA", "MX", "TXT", "SOA", "NS", "ANY", "SRV", "CNAME"]
CLIENTS = [None, "81.2.69.160/27", "89.160.20.112/28", "2001:218::/32", "0.0.0.0/0", "10.1.0.0/16", "216.160.83.56/29"]


SUBSET_NAMES = ("many.geo.example", "weighted-one.geo.example")  # max_answers: a random subset each time
POOLS = {"many.geo.example": {f"192.0.2.9{i}" for i in range(5)}, "weighted-one.geo.example": {"192.0.2.80", "192.0.2.81"}}


def canonical(response: bytes, subset_of: set[str] | None = None) -> tuple[object, ...]:
    """The response as data; with `subset_of`, answer records count only by number (and must come from it)."""
    message = dns.message.from_wire(response)

    def rdatas(rrset: dns.rrset.RRset) -> tuple[str, ...]:
        texts = sorted(r.to_text() for r in rrset)
        if subset_of is not None and rrset in message.answer:
            assert set(texts) <= subset_of
            return (f"{len(texts)} of the pool",)
        return tuple(texts)

    sections = tuple(
        tuple(sorted((rrset.name.to_text().lower(), rrset.rdtype, rrset.ttl, rdatas(rrset)) for rrset in section))
        for section in (message.answer, message.authority, message.additional)
    )
    options = tuple(sorted(o.to_text() for o in message.options))
    return (
        message.id,
        message.flags,
        message.rcode(),
        message.question[0].name.to_text(),
        message.edns,
        message.payload,
        options,
        *sections,
    )


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_fast_answers_equal_full_answers(tcp: bool) -> None:
    fast, full = handlers()
    checked = 0
    for name, rdtype, client, edns in itertools.product(NAMES, TYPES, CLIENTS, (False, True)):
        if client is not None and not edns:
            continue
        data = query_bytes(name, rdtype, edns, client, 1232 if edns else 512, False)
        for _ in range(2):  # the second one is answered from the packet cache
            got = fast.handle(data, "127.0.0.1", tcp)
            want = full.handle(data, "127.0.0.1", tcp)
            assert got is not None and want is not None
            if rdtype == "A" and name in SUBSET_NAMES:
                assert canonical(got, POOLS[name]) == canonical(want, POOLS[name]), (name, rdtype, client)
            elif rdtype in ("A", "AAAA"):
                assert canonical(got) == canonical(want), (name, rdtype, client)  # GEO answers: random order
            else:
                assert got == want, (name, rdtype, client)  # byte for byte
            checked += 1
    assert fast.cache is not None and len(fast.cache.entries) > 100
    assert checked > 1000


def test_answers_without_ecs_follow_the_peer() -> None:
    fast, full = handlers()
    for data in (
        query_bytes("www.geo.example", "A", False, None, 512, False),
        query_bytes("www.geo.example", "A", True, "0.0.0.0/0", 1232, False),
    ):
        for peer in ("127.0.0.1", "81.2.69.161", "216.160.83.57", "81.2.69.161", "2001:218::1", "::ffff:81.2.69.161"):
            assert canonical(fast.handle(data, peer, False)) == canonical(full.handle(data, peer, False))  # type: ignore[arg-type]


def test_a_new_client_network_is_answered_from_the_cache() -> None:
    """One GEO entry per question serves every client network: no fill, no dnslib, for a network never seen."""
    fast, full = handlers()
    fills = 0
    original = fast._full

    def counting(*args: object) -> bytes | None:
        nonlocal fills
        fills += 1
        return original(*args)  # type: ignore[arg-type]

    fast._full = counting  # type: ignore[method-assign]
    rng = random.Random(5)
    for index in range(300):
        subnet = (
            f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24"
            if index % 3
            else f"2a02:{rng.randint(0, 65535):x}::/32"
        )
        data = query_bytes("www.geo.example", "A", True, subnet, 1232, False)
        assert canonical(fast.handle(data, "127.0.0.1", False)) == canonical(full.handle(data, "127.0.0.1", False)), subnet  # type: ignore[arg-type]
        assert canonical(fast.handle(data, "127.0.0.1", False)) == canonical(full.handle(data, "127.0.0.1", False)), subnet  # type: ignore[arg-type]
    assert fills == 1


def test_a_new_generation_drops_the_cache() -> None:
    fast, _ = handlers()
    data = query_bytes("mail.example.com", "A", True, None, 1232, False)
    fast.handle(data, "127.0.0.1", False)
    fast.handle(data, "127.0.0.1", False)
    assert fast.cache is not None and fast.cache.entries
    fast.runtime.publish(zones=fast.runtime.snapshot.zones)
    fast.handle(data, "127.0.0.1", False)
    assert fast.cache.generation == fast.runtime.snapshot.generation
    assert len(fast.cache.entries) == 1


def test_weighted_order_survives_the_cache() -> None:
    fast, _ = handlers()
    data = query_bytes("weighted-one.geo.example", "A", False, None, 512, False)
    picks = [str(dns.message.from_wire(fast.handle(data, "127.0.0.1", False)).answer[0][0]) for _ in range(2000)]  # type: ignore[arg-type]
    assert picks.count("192.0.2.82") == 0
    assert 0.70 < picks.count("192.0.2.81") / len(picks) < 0.80


def test_exact_hits_echo_their_own_question() -> None:
    """An answer filled by one case and reached through another keeps each client's case."""
    fast, full = handlers()
    upper = query_bytes("MAIL.EXAMPLE.COM", "A", True, None, 1232, False)
    lower = query_bytes("mail.example.com", "A", True, None, 1232, False)
    for data in (upper, lower, lower, upper, lower):
        assert fast.handle(data, "127.0.0.1", False) == full.handle(data, "127.0.0.1", False)


def test_fast_answers_equal_full_answers_in_a_signed_zone(tmp_path: Path) -> None:
    """NSEC, RRSIG, DNSKEY, CDS and CDNSKEY queries, signed denial and signed ADDITIONAL, names with bytes above
    0x7f: byte for byte the same from the packet cache as from the full path (one Signer for both, Ed25519,
    so that the signatures are the same too)."""
    zones = tmp_path / "zones"
    zones.mkdir()
    text = (DATA / "zones" / "example.com.yaml").read_text()
    (zones / "example.com.yaml").write_text(text + "dnssec: {algorithm: ED25519}\n")
    generate(str(zones / "keys"), "example.com.", "ED25519")
    zoneset = load_zoneset(str(zones)).zoneset
    maps = region_maps(zoneset, GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb")))
    fast = QueryHandler(Runtime(zoneset, maps=maps), random.Random(1), fast_path=True)
    full = QueryHandler(Runtime(zoneset, maps=maps), random.Random(1), fast_path=False)
    full.signer = fast.signer
    names = ["example.com", "mail.example.com", "nothing.example.com", "x.static.example.com"]
    names += ["\\196X.example.com", "\\255.static.example.com", "x.alias.example.com", "sub.example.com"]
    checked = 0
    for name, rdtype, do in itertools.product(names, ["NSEC", "RRSIG", "DNSKEY", "CDS", "CDNSKEY", "MX", "A", "TXT"], (False, True)):
        data = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do).to_wire()
        for _ in range(2):  # the second one is answered from the packet cache
            assert fast.handle(data, "127.0.0.1", False) == full.handle(data, "127.0.0.1", False), (name, rdtype, do)
            checked += 1
    assert fast.cache is not None and len(fast.cache.entries) > 80 and checked > 250
