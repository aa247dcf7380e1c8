"""Online signing: an RRSIG for every RRset of a reply, and compact denial of existence (RFC 9824). One per DNS process.

Signatures are made by dnspython's `dnssec.sign` (canonical form, RRSIG fields) with
the `cryptography` keys, and kept per RRset (owner, type, TTL, the set of its data,
the zone's keys) until their refresh point, so a GEO answer is signed once per set
of endpoints, whatever their order, and an answer repeated is never signed twice.

Compact denial: a name that does not exist is answered NOERROR with an NSEC at the
name itself whose next name is `\\000.<name>` and whose types are RRSIG, NSEC and
NXNAME; a name without the type asked gets the same NSEC with the name's real types.
Nothing is enumerable and nothing depends on the zone's other names.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CAA
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.HINFO
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rdtypes.util
import dns.rrset
from dns.rdtypes.ANY.DNSKEY import DNSKEY

from geolb import model
from geolb.dns.lookup import QTYPE_NSEC, rum_token, wildcard_node
from geolb.dns.message import Reply
from geolb.dns.names import key_to_labels
from geolb.dnssec.keys import PrivateKey, dnskey_rdata, private_key
from geolb.model import NOERROR, NXDOMAIN

BACKDATE = 3600  # inception an hour back: clocks of validators run a little fast or slow
SIGNATURE_CACHE = 100_000  # RRsets whose signatures a process keeps
IN = dns.rdataclass.IN
NXNAME = 128  # RFC 9824: the bit that says "this name does not exist"
NSEC_DENIAL = frozenset({"RRSIG", "NSEC"})

Signatures = tuple[model.Opaque, ...]
R = TypeVar("R", bound=Reply)
SignatureKey = tuple[str, str, int, frozenset[model.Rdata], str, tuple[int, ...]]  # owner, type, TTL, data, zone, key tags


class Signer:
    """RRSIGs per RRset, made once and reused until their refresh point (bounded, least recently used first out)."""

    def __init__(self, limit: int = SIGNATURE_CACHE, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self.made = 0  # signatures made (each covers one RRset with one key)
        self._cache: collections.OrderedDict[SignatureKey, tuple[Signatures, float]] = collections.OrderedDict()
        self._keys: dict[tuple[str, int, bytes], tuple[PrivateKey, DNSKEY]] = {}
        # What "<token>.<rum_name>" holds (the families of --rum-address): its NSEC must not deny them (RFC 8198).
        self.rum_types: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self._cache)

    def signatures(self, rrset: model.RRset, zone: model.Zone) -> Signatures:
        """The RRSIG data covering `rrset` with every key of `zone` (which must be signed)."""
        signing = zone.dnssec
        assert signing is not None
        key = (rrset.name, rrset.rtype, rrset.ttl, frozenset(rrset.rdatas), zone.name, signing.key_tags)
        now = self.clock()
        known = self._cache.get(key)
        if known is not None and now < known[1]:
            self._cache.move_to_end(key)
            return known[0]
        made = self._sign(rrset, zone.name, signing, now)
        self._cache[key] = (made, now + signing.refresh)
        self._cache.move_to_end(key)
        while len(self._cache) > self.limit:
            self._cache.popitem(last=False)
        return made

    def rrsig(self, rrset: model.RRset, zone: model.Zone) -> model.RRset:
        return model.RRset(rrset.name, "RRSIG", rrset.ttl, self.signatures(rrset, zone))

    def _sign(self, rrset: model.RRset, zone_name: str, signing: model.Signing, now: float) -> Signatures:
        data = dns.rrset.from_rdata_list(dns_name(rrset.name), rrset.ttl, [to_dnspython(r, rrset.rtype) for r in rrset.rdatas])
        signer = dns.name.from_text(zone_name)
        out = []
        for zone_key in signing.keys:
            private, dnskey = self._key(zone_key)
            rrsig = dns.dnssec.sign(
                data,
                private,
                signer,
                dnskey,
                inception=int(now) - BACKDATE,
                expiration=int(now) + signing.validity,
            )
            out.append(model.Opaque(wire(rrsig)))
            self.made += 1
        return tuple(out)

    def _key(self, key: model.ZoneKey) -> tuple[PrivateKey, DNSKEY]:
        """The key objects, loaded once per process (they do not travel between processes)."""
        ident = (key.zone, key.key_tag, key.dnskey)
        known = self._keys.get(ident)
        if known is None:
            known = self._keys[ident] = (private_key(key), dnskey_rdata(key))
        return known

    # --- whole replies ------------------------------------------------------------------

    def own_records(self, reply: R, qname: str, qtype: int, zoneset: model.ZoneSet) -> R:
        """A query for NSEC or RRSIG at a name of a signed zone, which the lookup answered NODATA or NXDOMAIN:
        NSEC gets the name's NSEC RRset as compact denial builds it (a NODATA naming NSEC in its own bitmap
        would be bogus). RRSIG gets one RRSIG RRset, as Knot DNS answers (a minimal answer, as RFC 8482 gives
        ANY): the one over the name's RRset of the lowest type code, or over its NSEC when it holds nothing
        else (a missing name or an empty non-terminal, which compact denial gives an NSEC); unsigned, as RRSIGs
        always are, so validators take it as it is. Anything else comes back as it was."""
        if reply.rcode not in (NOERROR, NXDOMAIN) or reply.answer or reply.glue_required or len(reply.authority) != 1:
            return reply
        soa = reply.authority[0]
        zone = zoneset.zones.get(soa.name)
        if soa.rtype != "SOA" or zone is None or zone.dnssec is None:
            return reply
        nsec = self.nsec(zone, qname, reply.rcode == NXDOMAIN)
        if qtype == QTYPE_NSEC:
            return dataclasses.replace(reply, rcode=NOERROR, answer=(nsec,), authority=())
        held = sorted(_static_rrsets(zone, qname), key=lambda r: model.RTYPE_CODES[r.rtype])
        covered = model.RRset(qname, held[0].rtype, held[0].ttl, held[0].rdatas) if held else nsec
        return dataclasses.replace(reply, rcode=NOERROR, answer=(self.rrsig(covered, zone),), authority=())

    def nsec(self, zone: model.Zone, name: str, absent: bool) -> model.RRset:
        """The NSEC at `name` by compact denial: NXNAME when it does not exist, else its types."""
        held = types_at(zone, name)
        if zone.rum_name is not None and name.endswith(zone.rum_name) and rum_token(name, zone.rum_name):
            held = self.rum_types
        types: Iterable[str] = (*NSEC_DENIAL, "NXNAME") if absent else held | NSEC_DENIAL
        return model.RRset(name, "NSEC", zone.negative_ttl, (model.Opaque(nsec_data(name, types)),))

    def sign_reply(self, reply: R, qname: str, zoneset: model.ZoneSet) -> R:
        """`reply` as a query with DO gets it: RRSIGs beside every authoritative RRset, compact denial for
        names and types that do not exist. Replies from unsigned zones, and errors, come back as they were."""
        if reply.rcode not in (NOERROR, NXDOMAIN):
            return reply
        answer = tuple(self._with_signatures(reply.answer, zoneset))
        if reply.glue_required:  # a referral
            return dataclasses.replace(reply, authority=tuple(self._referral(reply.authority, zoneset)))
        # RFC 4035 §3.1.1: in-zone addresses in ADDITIONAL carry their RRSIGs too (to_wire drops those
        # signatures first when they do not fit).
        additional = tuple(self._with_signatures(reply.additional, zoneset))
        soa = reply.authority[0] if reply.authority and reply.authority[0].rtype == "SOA" else None
        if soa is None:
            authority = tuple(self._with_signatures(reply.authority, zoneset))
            return dataclasses.replace(reply, answer=answer, authority=authority, additional=additional)
        zone = zoneset.zones.get(soa.name)
        if zone is None or zone.dnssec is None:
            return dataclasses.replace(reply, answer=answer, additional=additional)
        nsec = self.nsec(zone, _final_name(reply.answer, qname), reply.rcode == NXDOMAIN)
        # The SOA is signed as the zone holds it (its TTL the RRSIG's original TTL, RFC 4034 §3.1.4), and both
        # go with the negative TTL (RFC 2308 §3, RFC 4035 §3.1.3), as Knot DNS sends them.
        soa_signature = dataclasses.replace(self.rrsig(zone.soa, zone), ttl=soa.ttl)
        authority = (soa, soa_signature, nsec, self.rrsig(nsec, zone))
        return dataclasses.replace(reply, rcode=NOERROR, answer=answer, authority=authority, additional=additional)

    def _with_signatures(self, rrsets: Iterable[model.RRset], zoneset: model.ZoneSet) -> Iterable[model.RRset]:
        for rrset in rrsets:
            yield rrset
            if rrset.rtype == "RRSIG":
                continue  # an RRSIG is never signed (RFC 4034 §3)
            zone = zoneset.find_zone(rrset.name)
            if zone is not None and zone.dnssec is not None and not _below_cut(zone, rrset.name):
                yield self.rrsig(rrset, zone)

    def _referral(self, authority: tuple[model.RRset, ...], zoneset: model.ZoneSet) -> Iterable[model.RRset]:
        """The NS of a delegation stay unsigned (the child owns them); the proof that it has no DS is signed."""
        for rrset in authority:
            yield rrset
            if rrset.rtype != "NS":
                continue
            zone = zoneset.find_zone(rrset.name)
            if zone is None or zone.dnssec is None:
                continue
            nsec = model.RRset(rrset.name, "NSEC", zone.negative_ttl, (model.Opaque(nsec_data(rrset.name, {"NS", *NSEC_DENIAL})),))
            yield nsec
            yield self.rrsig(nsec, zone)


def _below_cut(zone: model.Zone, name: str) -> bool:
    """At or below a delegation: glue and the child's NS, which the zone does not sign."""
    while zone.delegations and name != zone.name and name != ".":
        if name in zone.delegations:
            return True
        dot = name.find(".")
        name = name[dot + 1 :] or "."
    return False


def _static_rrsets(zone: model.Zone, name: str) -> tuple[model.RRset, ...]:
    """The RRsets a name holds whoever asks (its own node's, or the wildcard's that answers for it); GEO
    addresses depend on the client and are signed with each answer."""
    node = zone.nodes.get(name)
    if node is None and name not in zone.empty_nonterminals:
        node = wildcard_node(zone, name)
    return () if node is None else tuple(node.rrsets.values())


def dns_name(name: str) -> dns.name.Name:
    """A lookup key as dnspython's name, byte for byte (from_text would IDNA-encode bytes above 0x7f)."""
    return dns.name.Name((*key_to_labels(name), b""))


def rrsig_records(rrsig: model.RRset) -> bytes:
    """An RRSIG RRset owned by the question name as wire records (the owner a pointer to the question)."""
    head = b"\xc0\x0c\x00\x2e\x00\x01" + rrsig.ttl.to_bytes(4, "big")
    return b"".join(head + len(r.data).to_bytes(2, "big") + r.data for r in rrsig.rdatas if isinstance(r, model.Opaque))


def _final_name(answer: tuple[model.RRset, ...], qname: str) -> str:
    """The name a negative answer is about: the end of its CNAME chain, else the question."""
    if answer and answer[-1].rtype == "CNAME":
        target = answer[-1].rdatas[0]
        assert isinstance(target, model.CNAME)
        return target.target
    return qname


def types_at(zone: model.Zone, name: str) -> frozenset[str]:
    """The types a name has (from its own node, or the wildcard that answers for it); none for an empty non-terminal."""
    node = zone.nodes.get(name)
    if node is None and name not in zone.empty_nonterminals:
        node = wildcard_node(zone, name)
    if node is None:
        return frozenset()
    types = set(node.rrsets)
    if node.geo is not None:
        pool = zone.pools.get(node.geo.pool)
        endpoints = [e for region in pool.regions for e in region.endpoints] if pool is not None else []
        types |= {model.address_rtype(e.address) for e in endpoints} or {"A"}
    return frozenset(types)


def nsec_data(name: str, types: Iterable[str]) -> bytes:
    """An NSEC's data for compact denial: next name `\\000.<name>`, and the types' bitmap."""
    owner = dns_name(name)
    following = dns.name.Name((b"\x00", *owner.labels))
    codes = [dns.rdatatype.RdataType.make(NXNAME if t == "NXNAME" else t) for t in types]
    bitmap = dns.rdtypes.util.Bitmap.from_rdtypes(codes)
    return wire(_make(dns.rdtypes.ANY.NSEC.NSEC, dns.rdatatype.NSEC, following, bitmap.windows))


def to_dnspython(rdata: model.Rdata, rtype: str) -> dns.rdata.Rdata:
    """geolb's record data as dnspython's, for its canonical form."""
    code = dns.rdatatype.from_text(rtype)
    name = dns.name.from_text
    match rdata:
        case model.A(address):
            return _make(dns.rdtypes.IN.A.A, code, str(address))
        case model.AAAA(address):
            return _make(dns.rdtypes.IN.AAAA.AAAA, code, str(address))
        case model.CNAME(target):
            return _make(dns.rdtypes.ANY.CNAME.CNAME, code, name(target))
        case model.NS(target):
            return _make(dns.rdtypes.ANY.NS.NS, code, name(target))
        case model.PTR(target):
            return _make(dns.rdtypes.ANY.PTR.PTR, code, name(target))
        case model.MX(preference, exchange):
            return _make(dns.rdtypes.ANY.MX.MX, code, preference, name(exchange))
        case model.TXT(strings):
            return _make(dns.rdtypes.ANY.TXT.TXT, code, strings)
        case model.SRV(priority, weight, port, target):
            return _make(dns.rdtypes.IN.SRV.SRV, code, priority, weight, port, name(target))
        case model.CAA(flags, tag, value):
            return _make(dns.rdtypes.ANY.CAA.CAA, code, flags, tag.encode(), value.encode())
        case model.SOA(mname, rname, serial, refresh, retry, expire, minimum):
            return _make(dns.rdtypes.ANY.SOA.SOA, code, name(mname), name(rname), serial, refresh, retry, expire, minimum)
        case model.HINFO(cpu, os):
            return _make(dns.rdtypes.ANY.HINFO.HINFO, code, cpu.encode(), os.encode())
        case model.Opaque(data):
            return dns.rdata.from_wire(IN, code, data, 0, len(data))
    raise TypeError(f"cannot sign {rdata!r}")


def _make(kind: Callable[..., dns.rdata.Rdata], code: dns.rdatatype.RdataType, *fields: object) -> dns.rdata.Rdata:
    return kind(IN, code, *fields)


def wire(rdata: dns.rdata.Rdata) -> bytes:
    """Record data in wire format, uncompressed (RRSIG's signer and NSEC's next name never are)."""
    data = rdata.to_wire()
    assert data is not None
    return data
