"""Question x ZoneSet -> Lookup: answer, NXDOMAIN, NODATA, referral or a GEO record to resolve. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from geolb import model
from geolb.dns.names import parent
from geolb.model import NOERROR, NXDOMAIN, REFUSED

QTYPE_A, QTYPE_CNAME, QTYPE_AAAA, QTYPE_DS, QTYPE_RRSIG, QTYPE_NSEC, QTYPE_ANY = 1, 5, 28, 43, 46, 47, 255
QTYPE_AXFR, QTYPE_IXFR = 252, 251
CLASS_IN, CLASS_ANY = 1, 255
MAX_CHAIN = 12  # CNAMEs followed before a chain counts as a loop

# RFC 8482: the one RRset an ANY query gets, in this order of preference.
_ANY_PREFERENCE = ("CNAME", "SOA", "A", "AAAA", "MX", "TXT", "SRV", "CAA", "PTR", "NS")


@dataclass(frozen=True)
class GeoTarget:
    """A GEO record reached by the question: `answer.py` chooses its endpoints per client."""

    owner: str
    record: model.GeoRecord
    rtype: str  # "A" or "AAAA"
    negative_soa: model.RRset  # for NODATA when the pool has no endpoint of that family


@dataclass(frozen=True)
class RumTarget:
    """A name under a zone's `rum_name` (SPEC §10 resolver discovery): the handler answers it with the RUM
    listener's addresses and records who asked for the token."""

    token: str  # the label under the rum name, lower case; "" for the rum name itself (NODATA)
    owner: str  # the name asked (or a CNAME chain's end)
    qtype: int
    negative_soa: model.RRset


@dataclass(frozen=True)
class Lookup:
    rcode: int
    aa: bool
    answer: tuple[model.RRset, ...] = ()
    authority: tuple[model.RRset, ...] = ()
    additional: tuple[model.RRset, ...] = ()
    geo: GeoTarget | None = None
    referral: bool = False
    zone: str = ""  # the zone the question fell in ("" when refused), for metrics
    rum: RumTarget | None = None


REFUSED_LOOKUP = Lookup(rcode=REFUSED, aa=False)
RUM_TTL = 5  # "<token>.rum.<zone>": short, so that a token's lookups reach us (SPEC §10)


def rum_answer(found: Lookup, target: RumTarget, addresses: Sequence[model.IPAddress]) -> Lookup:
    """A name under a zone's rum name: `addresses` (the RUM listener's, --rum-address) of the queried family for
    a token, NODATA for other types and for the rum name itself. The DNS path and explain both answer from here."""
    if target.token:
        version = {QTYPE_A: 4, QTYPE_AAAA: 6}.get(target.qtype)
        family = [a for a in addresses if a.version == version]
        if family:
            rrset = model.RRset(target.owner, model.address_rtype(family[0]), RUM_TTL, tuple(model.address_rdata(a) for a in family))
            return Lookup(NOERROR, True, (*found.answer, rrset), zone=found.zone)
    return Lookup(NOERROR, True, found.answer, authority=(target.negative_soa,), zone=found.zone)


def negative_soa(zone: model.Zone) -> model.RRset:
    """The SOA for negative answers, its TTL capped at the SOA minimum (RFC 2308)."""
    return model.RRset(zone.name, "SOA", zone.negative_ttl, zone.soa.rdatas)


def lookup(zoneset: model.ZoneSet, name: str, qtype: int, qclass: int = CLASS_IN) -> Lookup:
    """Resolve `name`/`qtype` in the served zones, following CNAMEs that stay inside them."""
    zone = zoneset.find_zone(name)
    if zone is None or qclass not in (CLASS_IN, CLASS_ANY) or qtype in (QTYPE_AXFR, QTYPE_IXFR):
        return REFUSED_LOOKUP
    chain: list[model.RRset] = []
    seen = {name}
    first_zone = zone.name
    while True:
        step = _lookup_in_zone(zone, name, qtype)
        if not chain:
            if step.cname is None:
                return step.result
        else:
            result = step.result
            if result.referral:
                return Lookup(NOERROR, True, tuple(chain), zone=first_zone)  # the resolver follows it from here
            if step.cname is None:
                return Lookup(
                    result.rcode,
                    True,
                    (*chain, *result.answer),
                    result.authority,
                    result.additional,
                    result.geo,
                    zone=first_zone,
                    rum=result.rum,
                )
        assert step.cname is not None
        chain.append(step.cname)
        cname = step.cname.rdatas[0]
        assert isinstance(cname, model.CNAME)
        target = cname.target
        next_zone = zoneset.find_zone(target)
        if next_zone is None or target in seen or len(chain) >= MAX_CHAIN:
            return Lookup(NOERROR, True, tuple(chain), zone=first_zone)
        seen.add(target)
        zone, name = next_zone, target


@dataclass(frozen=True)
class _Step:
    result: Lookup
    cname: model.RRset | None = None  # set when the name is an alias to follow


def _lookup_in_zone(zone: model.Zone, name: str, qtype: int) -> _Step:
    rum_name = zone.rum_name
    if rum_name is not None and name.endswith(rum_name):
        token = rum_token(name, rum_name)
        if token is not None:
            return _Step(Lookup(NOERROR, True, zone=zone.name, rum=RumTarget(token, name, qtype, negative_soa(zone))))
    if zone.delegations:
        cut = _delegation_at_or_above(zone, name)
        if cut is not None and not (cut == name and qtype == QTYPE_DS):
            return _Step(_referral(zone, cut))

    node = zone.nodes.get(name)
    if node is None:
        if name in zone.empty_nonterminals:
            return _Step(Lookup(NOERROR, True, authority=(negative_soa(zone),), zone=zone.name))
        node = wildcard_node(zone, name)
        if node is None:
            return _Step(Lookup(NXDOMAIN, True, authority=(negative_soa(zone),), zone=zone.name))
    return _answer_from_node(zone, node, name, qtype)


def _answer_from_node(zone: model.Zone, node: model.Node, owner: str, qtype: int) -> _Step:
    rrsets = node.rrsets
    cname = rrsets.get("CNAME")
    # ANY (RFC 1034 §4.3.2) matches the alias itself, and RRSIG and NSEC are the alias's own (RFC 4035 §2.5).
    if cname is not None and qtype not in (QTYPE_CNAME, QTYPE_ANY, QTYPE_RRSIG, QTYPE_NSEC):
        return _Step(Lookup(NOERROR, True, zone=zone.name), cname=_owned(cname, owner))
    if qtype == QTYPE_ANY:
        for rtype in _ANY_PREFERENCE:
            if rtype in rrsets:
                return _Step(Lookup(NOERROR, True, (_owned(rrsets[rtype], owner),), zone=zone.name))
        ttl = node.geo.ttl if node.geo is not None else zone.soa.ttl
        hinfo = model.RRset(owner, "HINFO", ttl, (model.HINFO("RFC8482", ""),))
        return _Step(Lookup(NOERROR, True, (hinfo,), zone=zone.name))
    if node.geo is not None and qtype in (QTYPE_A, QTYPE_AAAA):
        target = GeoTarget(owner, node.geo, "A" if qtype == QTYPE_A else "AAAA", negative_soa(zone))
        return _Step(Lookup(NOERROR, True, geo=target, zone=zone.name))
    rrset = rrsets.get(model.RTYPE_NAMES.get(qtype, ""))
    if rrset is None:
        return _Step(Lookup(NOERROR, True, authority=(negative_soa(zone),), zone=zone.name))
    return _Step(Lookup(NOERROR, True, (_owned(rrset, owner),), additional=_glue(zone, rrset), zone=zone.name))


def rum_token(name: str, rum_name: str) -> str | None:
    """The token of "<token>.<rum_name>" (one label), "" for the rum name itself, None for any other name."""
    if name == rum_name:
        return ""
    head = name[: -len(rum_name)]
    if len(head) < 2 or head[-1] != "." or "." in head[:-1]:
        return None  # deeper names, and labels holding escaped dots, are not tokens: NXDOMAIN as usual
    return head[:-1].lower()


def _owned(rrset: model.RRset, owner: str) -> model.RRset:
    """The RRset under `owner` (a wildcard's data answers under the name asked)."""
    return rrset if rrset.name == owner else model.RRset(owner, rrset.rtype, rrset.ttl, rrset.rdatas)


def _delegation_at_or_above(zone: model.Zone, name: str) -> str | None:
    while name != zone.name and name != ".":
        if name in zone.delegations:
            return name
        name = parent(name)
    return None


def _referral(zone: model.Zone, cut: str) -> Lookup:
    ns = zone.nodes[cut].rrsets["NS"]
    return Lookup(NOERROR, False, authority=(ns,), additional=_glue(zone, ns), referral=True, zone=zone.name)


def _glue(zone: model.Zone, rrset: model.RRset) -> tuple[model.RRset, ...]:
    """Additional section processing (RFC 1035 §3.3.9): the A/AAAA of the names an NS, MX or SRV
    RRset points to, when they live in this zone (for NS at a delegation: the glue)."""
    glue: list[model.RRset] = []
    for rdata in rrset.rdatas:
        match rdata:
            case model.NS(target) | model.MX(_, target) | model.SRV(_, _, _, target):
                node = zone.nodes.get(target)
                if node is not None:
                    glue.extend(r for t in ("A", "AAAA") if (r := node.rrsets.get(t)) is not None and r not in glue)
    return tuple(glue)


def wildcard_node(zone: model.Zone, name: str) -> model.Node | None:
    """RFC 4592: the `*` child of the closest encloser, if there is one."""
    encloser = name
    while encloser != zone.name:
        encloser = parent(encloser)
        if encloser in zone.nodes or encloser in zone.empty_nonterminals:
            break
    return zone.nodes.get("*." + encloser)
