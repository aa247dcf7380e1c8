"""Online signing through the real query handler: every signature checked by dnspython, compact denial's shape,
the signature cache, and answers without DO unchanged. Validation through a real resolver: blackbox/test_dnssec.py."""

from __future__ import annotations

import ipaddress
import random
import shutil
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from geolb import model
from geolb.config.zoneset import load_zoneset
from geolb.dnssec.keys import generate
from geolb.dnssec.sign import Signer
from geolb.geo.locate import GeoIPLocator
from geolb.handler import QueryHandler
from geolb.runtime import Runtime
from tests.geomaps import region_maps

DATA = Path(__file__).resolve().parent.parent / "data"
ZONE = dns.name.from_text("example.com.")


def signed_zones(tmp_path: Path, algorithm: str = "ECDSAP256SHA256") -> Path:
    """The DNS tests' zones, example.com signed (example.net, which it points into, not)."""
    zones = tmp_path / "zones"
    shutil.copytree(DATA / "zones", zones)
    with open(zones / "example.com.yaml", "a") as handle:
        handle.write(f"dnssec: {{algorithm: {algorithm}}}\n")
    generate(str(zones / "keys"), "example.com.", algorithm)
    return zones


def handler_for(zones: Path, fast_path: bool = True) -> QueryHandler:
    zoneset = load_zoneset(str(zones)).zoneset
    maps = region_maps(zoneset, GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb")))
    return QueryHandler(Runtime(zoneset, maps=maps), random.Random(1), fast_path=fast_path)


def ask(handler: QueryHandler, name: str, rdtype: str, *, do: bool = True, ecs: str | None = None, payload: int = 1232) -> bytes:
    options = [] if ecs is None else [dns.edns.ECSOption(ecs.split("/")[0], int(ecs.split("/")[1]))]
    query = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do, payload=payload, options=options)
    query.flags &= ~dns.flags.RD
    query.id = 4242
    response = handler.handle(query.to_wire(), "127.0.0.1", False)
    assert response is not None
    return response


def dnskeys(handler: QueryHandler) -> dict[dns.name.Name, dns.rrset.RRset]:
    message = dns.message.from_wire(ask(handler, "example.com", "DNSKEY"))
    keys = message.find_rrset(message.answer, ZONE, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    return {ZONE: keys}


def validate_all(message: dns.message.Message, keys: dict[dns.name.Name, dns.rrset.RRset]) -> list[str]:
    """Every RRset of the answer and authority sections that carries a signature, validated; returns their names."""
    checked = []
    for section in (message.answer, message.authority):
        signatures = {(r.name, r.covers): r for r in section if r.rdtype == dns.rdatatype.RRSIG}
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            rrsig = signatures.get((rrset.name, rrset.rdtype))
            if rrsig is None:
                continue
            dns.dnssec.validate(rrset, rrsig, keys)  # raises ValidationFailure
            checked.append(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}")
    return checked


NAMES = [
    "example.com", "www.example.com", "WWW.Example.COM", "mail.example.com", "docs.example.com", "nothing.example.com",
    "x.static.example.com", "exists.static.example.com", "sub.example.com", "deep.sub.example.com", "_sip._udp.example.com",
    "ptr.example.com", "v4.example.com", "y.alias.example.com", "to-nowhere.example.com", "cross.example.com", "static.example.com",
]  # fmt: skip
TYPES = ["A", "AAAA", "MX", "TXT", "SOA", "NS", "ANY", "SRV", "CNAME", "CAA", "PTR", "DNSKEY", "DS"]


@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "ED25519"])
def test_every_answer_validates(tmp_path: Path, algorithm: str) -> None:
    handler = handler_for(signed_zones(tmp_path, algorithm))
    keys = dnskeys(handler)
    unsigned_zone = dns.name.from_text("example.net.")
    for name in NAMES:
        for rdtype in TYPES:
            for client in (None, "81.2.69.160/27", "2001:218::/32"):
                message = dns.message.from_wire(ask(handler, name, rdtype, ecs=client))
                assert message.rcode() == dns.rcode.NOERROR, (name, rdtype)  # compact denial: never NXDOMAIN
                validate_all(message, keys)
                referral = not message.flags & dns.flags.AA
                for section in (message.answer, message.authority):
                    for rrset in section:
                        if rrset.rdtype == dns.rdatatype.RRSIG or rrset.name.is_subdomain(unsigned_zone):
                            continue
                        covered = any(
                            r.rdtype == dns.rdatatype.RRSIG and r.name == rrset.name and r.covers == rrset.rdtype for r in section
                        )
                        if referral and rrset.rdtype == dns.rdatatype.NS:
                            assert not covered, f"{name} {rdtype}: the child's NS signed"
                        else:
                            assert covered, f"{name} {rdtype}: {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} unsigned"


def nsec_of(message: dns.message.Message) -> tuple[str, str, set[str]]:
    """(owner, next name, types) of the NSEC in the authority section."""
    nsec = next(r for r in message.authority if r.rdtype == dns.rdatatype.NSEC)
    following, *types = nsec[0].to_text().split()
    return nsec.name.to_text().lower(), following, set(types)  # the owner comes in the question's case


def test_compact_denial_answers_nxdomain_as_nodata_with_nxname(tmp_path: Path) -> None:
    handler = handler_for(signed_zones(tmp_path))
    message = dns.message.from_wire(ask(handler, "Nothing.Example.com", "A"))
    assert message.rcode() == dns.rcode.NOERROR and not message.answer
    assert nsec_of(message) == ("nothing.example.com.", "\\000.nothing.example.com.", {"RRSIG", "NSEC", "NXNAME"})
    soa = message.find_rrset(message.authority, ZONE, dns.rdataclass.IN, dns.rdatatype.SOA)
    assert next(r for r in message.authority if r.rdtype == dns.rdatatype.NSEC).ttl == soa.ttl == 60  # the negative TTL
    # NODATA: the name's real types.
    assert nsec_of(dns.message.from_wire(ask(handler, "mail.example.com", "TXT")))[2] == {"A", "AAAA", "RRSIG", "NSEC"}
    assert nsec_of(dns.message.from_wire(ask(handler, "v4.example.com", "AAAA")))[2] == {"A", "RRSIG", "NSEC"}  # GEO, IPv4 only
    assert nsec_of(dns.message.from_wire(ask(handler, "example.com", "SRV")))[2] >= {"SOA", "NS", "MX", "TXT", "CAA", "DNSKEY"}
    assert nsec_of(dns.message.from_wire(ask(handler, "q.static.example.com", "MX")))[2] == {"A", "TXT", "RRSIG", "NSEC"}  # wildcard
    # A CNAME to a name that does not exist: the denial is about the target.
    message = dns.message.from_wire(ask(handler, "to-nowhere.example.com", "A"))
    assert message.rcode() == dns.rcode.NOERROR
    assert nsec_of(message)[:2] == ("missing.example.com.", "\\000.missing.example.com.")
    # A delegation: NS unsigned, the absence of DS proven.
    message = dns.message.from_wire(ask(handler, "deep.sub.example.com", "A"))
    assert nsec_of(message) == ("sub.example.com.", "\\000.sub.example.com.", {"NS", "RRSIG", "NSEC"})


def test_without_do_answers_are_byte_identical_to_an_unsigned_zone(tmp_path: Path) -> None:
    signed = handler_for(signed_zones(tmp_path))
    unsigned = handler_for(DATA / "zones")
    for name in NAMES:
        for rdtype in TYPES:
            if rdtype == "DNSKEY":
                continue  # the signed zone has one
            for client in (None, "81.2.69.160/27"):
                for _ in range(2):  # the full path, then the packet cache
                    assert ask(signed, name, rdtype, do=False, ecs=client) == ask(unsigned, name, rdtype, do=False, ecs=client), (
                        name,
                        rdtype,
                    )


def test_geo_answers_are_signed_once_per_set_of_endpoints(tmp_path: Path) -> None:
    handler = handler_for(signed_zones(tmp_path))
    keys = dnskeys(handler)
    ask(handler, "www.example.com", "A", ecs="81.2.69.160/27")  # the full path; signs us-east's set for the cache entry
    made = handler.signer.made
    answers = set()
    for n in range(40):  # clients all over, from the packet cache
        for client in ("81.2.69.160/27", "89.160.20.112/28", f"216.160.83.{56 + n % 4}/32", "2.2.3.0/24"):
            message = dns.message.from_wire(ask(handler, "www.example.com", "A", ecs=client))
            validate_all(message, keys)
            answers.add(frozenset(r.to_text() for r in message.answer[0]))
    assert len(answers) >= 2  # several regions answered
    assert handler.signer.made - made <= len(answers)  # each set signed once, whatever the order of its records


def test_signatures_are_reused_until_their_refresh_and_the_cache_is_bounded(tmp_path: Path) -> None:
    zone = load_zoneset(str(signed_zones(tmp_path))).zoneset.zones["example.com."]
    now = [1_800_000_000.0]
    signer = Signer(limit=3, clock=lambda: now[0])
    addresses = (model.A(ipaddress.IPv4Address("192.0.2.1")), model.A(ipaddress.IPv4Address("192.0.2.2")))
    rrset = model.RRset("www.example.com.", "A", 30, addresses)
    first = signer.signatures(rrset, zone)
    reordered = model.RRset(rrset.name, rrset.rtype, rrset.ttl, rrset.rdatas[::-1])
    assert signer.signatures(reordered, zone) is first and signer.made == 1
    assert zone.dnssec is not None
    now[0] += zone.dnssec.refresh + 1
    assert signer.signatures(rrset, zone) is not first and signer.made == 2
    for n in range(5):
        signer.signatures(model.RRset(f"n{n}.example.com.", "A", 30, rrset.rdatas), zone)
    assert len(signer) == 3


def test_large_signed_answers_truncate_over_udp_and_come_whole_over_tcp(tmp_path: Path) -> None:
    handler = handler_for(signed_zones(tmp_path))
    keys = dnskeys(handler)
    size = len(ask(handler, "big.example.com", "TXT", do=False)) + 20  # a client limit the answer fits in...
    plain = dns.message.from_wire(ask(handler, "big.example.com", "TXT", do=False, payload=size))
    assert not plain.flags & dns.flags.TC
    udp = dns.message.from_wire(ask(handler, "big.example.com", "TXT", payload=size))
    assert udp.flags & dns.flags.TC and not udp.answer  # ...but not with its signature
    query = dns.message.make_query("big.example.com", "TXT", use_edns=0, want_dnssec=True)
    response = handler.handle(query.to_wire(), "127.0.0.1", True)
    assert response is not None
    whole = dns.message.from_wire(response)
    assert not whole.flags & dns.flags.TC
    assert validate_all(whole, keys) == ["big.example.com. TXT"]


def test_ready_packets_are_dropped_when_their_signatures_are_due(tmp_path: Path) -> None:
    handler = handler_for(signed_zones(tmp_path))
    assert handler.cache is not None
    ask(handler, "mail.example.com", "A")
    assert handler.cache.entries and handler.signed_cached_until < float("inf")
    handler.expire_signatures(handler.signed_cached_until - 1)
    assert handler.cache.entries  # not yet
    handler.expire_signatures(handler.signed_cached_until)
    assert not handler.cache.entries and handler.signed_cached_until == float("inf")
