"""lookup.py: question x zone set -> answer, NXDOMAIN, NODATA, referral or GEO target, as a table of cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from geolb import model
from geolb.config.zoneset import load_zoneset
from geolb.dns.lookup import lookup

DATA = Path(__file__).resolve().parent.parent / "data"
ZONES = load_zoneset(str(DATA / "zones")).zoneset
A, NS, CNAME, SOA, MX, TXT, AAAA, DS, ANY, AXFR = 1, 2, 5, 6, 15, 16, 28, 43, 255, 252


def summary(name: str, qtype: int) -> tuple[object, ...]:
    found = lookup(ZONES, name, qtype)
    return (
        model.RCODE_NAMES[found.rcode],
        found.aa,
        tuple((r.name, r.rtype) for r in found.answer),
        tuple((r.name, r.rtype) for r in found.authority),
        tuple((r.name, r.rtype) for r in found.additional),
        None if found.geo is None else (found.geo.owner, found.geo.rtype, found.geo.record.pool),
        found.referral,
    )


CASES = [
    # name, qtype, rcode, AA, answer, authority, additional, GEO target, referral
    ("mail.example.com.", A, "NOERROR", True, (("mail.example.com.", "A"),), (), (), None, False),
    ("mail.example.com.", TXT, "NOERROR", True, (), (("example.com.", "SOA"),), (), None, False),  # NODATA
    ("nothing.example.com.", A, "NXDOMAIN", True, (), (("example.com.", "SOA"),), (), None, False),
    ("example.org.", A, "REFUSED", False, (), (), (), None, False),  # in no zone
    ("example.com.", AXFR, "REFUSED", False, (), (), (), None, False),
    (
        "example.com.",
        NS,
        "NOERROR",
        True,
        (("example.com.", "NS"),),
        (),
        (("ns1.example.com.", "A"), ("ns1.example.com.", "AAAA"), ("ns2.example.com.", "A")),
        None,
        False,
    ),
    ("www.example.com.", A, "NOERROR", True, (), (), (), ("www.example.com.", "A", "web"), False),
    ("www.example.com.", AAAA, "NOERROR", True, (), (), (), ("www.example.com.", "AAAA", "web"), False),
    ("www.example.com.", MX, "NOERROR", True, (), (("example.com.", "SOA"),), (), None, False),
    ("docs.example.com.", A, "NOERROR", True, (("docs.example.com.", "CNAME"),), (), (), ("www.example.com.", "A", "web"), False),
    ("docs.example.com.", CNAME, "NOERROR", True, (("docs.example.com.", "CNAME"),), (), (), None, False),
    ("loop1.example.com.", A, "NOERROR", True, (("loop1.example.com.", "CNAME"), ("loop2.example.com.", "CNAME")), (), (), None, False),
    ("to-nowhere.example.com.", A, "NXDOMAIN", True, (("to-nowhere.example.com.", "CNAME"),), (("example.com.", "SOA"),), (), None, False),
    ("x.static.example.com.", A, "NOERROR", True, (("x.static.example.com.", "A"),), (), (), None, False),  # wildcard
    ("exists.static.example.com.", A, "NOERROR", True, (), (("example.com.", "SOA"),), (), None, False),  # no wildcard under a name
    ("static.example.com.", A, "NOERROR", True, (), (("example.com.", "SOA"),), (), None, False),  # empty non-terminal
    ("host.sub.example.com.", A, "NOERROR", False, (), (("sub.example.com.", "NS"),), (("ns1.sub.example.com.", "A"),), None, True),
    ("sub.example.com.", DS, "NOERROR", True, (), (("example.com.", "SOA"),), (), None, False),  # DS is the parent's
    ("example.com.", ANY, "NOERROR", True, (("example.com.", "SOA"),), (), (), None, False),  # RFC 8482: one RRset
    ("www.example.com.", ANY, "NOERROR", True, (("www.example.com.", "HINFO"),), (), (), None, False),
]


@pytest.mark.parametrize(("name", "qtype", "rcode", "aa", "answer", "authority", "additional", "geo", "referral"), CASES)
def test_lookup(
    name: str, qtype: int, rcode: str, aa: bool, answer: tuple[object, ...], authority: tuple[object, ...],
    additional: tuple[object, ...], geo: object, referral: bool,
) -> None:  # fmt: skip
    assert summary(name, qtype) == (rcode, aa, answer, authority, additional, geo, referral)


def test_negative_ttl_is_the_soa_ttl_capped_by_its_minimum() -> None:
    found = lookup(ZONES, "nothing.example.com.", A)
    assert found.authority[0].ttl == 60  # SOA TTL 3600, minimum 60 (RFC 2308)
