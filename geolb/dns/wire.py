"""DNS wire format: bytes -> `Query`, `Reply` -> bytes (EDNS, ECS, truncation). The only dnslib importer; knows nothing of geo."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dnslib

from geolb import model
from geolb.dns.cookies import well_formed
from geolb.dns.message import Reply
from geolb.dns.names import labels_to_key
from geolb.model import BADVERS, FORMERR, NOERROR, NOTIMP

OPT, ECS_OPTION, NSID_OPTION, COOKIE_OPTION = 41, 8, 3, 10
EDNS_UDP_SIZE = 1232  # what we advertise, and the most we send over UDP (DNS flag day 2020)
CLASSIC_UDP_SIZE = 512
TCP_SIZE = 65535


def response_limit(udp_size: int | None, tcp: bool) -> int:
    """The largest response a client takes: TCP carries anything; over UDP its EDNS size
    (RFC 6891 §6.2.5), 512 without EDNS, and never more than we advertise."""
    if tcp:
        return TCP_SIZE
    if udp_size is None:
        return CLASSIC_UDP_SIZE
    return max(CLASSIC_UDP_SIZE, min(udp_size, EDNS_UDP_SIZE))


@dataclass(frozen=True)
class ClientSubnet:
    """An EDNS Client Subnet option (RFC 7871) as the query sent it."""

    family: int  # 1: IPv4, 2: IPv6
    source: int
    scope: int
    network: model.IPNetwork  # the address masked to `source` bits

    def to_option(self, scope: int) -> bytes:
        """The option data echoed in a response, with our SCOPE PREFIX-LENGTH."""
        size = (self.source + 7) // 8
        return struct.pack("!HBB", self.family, self.source, scope) + self.network.network_address.packed[:size]


@dataclass(frozen=True)
class Edns:
    udp_size: int
    version: int
    do: bool
    ecs: ClientSubnet | None
    nsid: bool = False  # the query asks which server answers (RFC 5001)
    cookie: bytes | None = None  # the COOKIE option's data (RFC 7873): a client cookie, maybe a server cookie


@dataclass(frozen=True)
class Query:
    """A parsed question: what lookup needs, plus what the response must echo."""

    id: int
    opcode: int
    rd: bool
    cd: bool
    labels: tuple[bytes, ...]  # the question name as sent, case kept
    name: str  # lower-case lookup key, "www.example.com."
    qtype: int
    qclass: int
    edns: Edns | None

    def response_limit(self, tcp: bool) -> int:
        return response_limit(None if self.edns is None else self.edns.udp_size, tcp)


@dataclass(frozen=True)
class Rejection:
    """A query answered with an error code before lookup (FORMERR, NOTIMP, BADVERS)."""

    rcode: int
    query: Query  # header, question (labels may be empty) and EDNS to echo


class WireError(ValueError):
    """Bytes that do not parse as a DNS query: dropped without an answer."""


def parse_query(data: bytes) -> Query | Rejection:
    """Parse a query; raises WireError for what must be dropped (unparseable, or a response)."""
    if len(data) < 12:
        raise WireError("shorter than a DNS header")
    try:
        record = dnslib.DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises several kinds on bad input; all mean "drop"
        raise WireError(f"unparseable: {exc}") from None
    header = record.header
    if header.qr:
        raise WireError("a response, not a query")

    edns: Edns | None = None
    problem: int | None = None
    opts = [rr for rr in record.ar if rr.rtype == OPT]
    if len(opts) > 1:
        problem = FORMERR
    elif opts:
        edns, problem = _parse_opt(opts[0], opt_options(data))

    questions = record.questions
    if len(questions) == 1:
        question = questions[0]
        labels = tuple(question.qname.label)
        qtype, qclass = question.qtype, question.qclass
    else:
        labels, qtype, qclass = (), 0, 0
    query = Query(
        id=header.id,
        opcode=header.opcode,
        rd=bool(header.rd),
        cd=bool(header.cd),
        labels=labels,
        name=labels_to_key(labels),
        qtype=qtype,
        qclass=qclass,
        edns=edns,
    )
    if header.opcode != 0:
        return Rejection(NOTIMP, query)
    if problem is not None:
        return Rejection(problem, query)
    if not questions and edns is not None and edns.cookie is not None:
        return Rejection(NOERROR, query)  # RFC 7873 §5.4: a query for a server cookie alone
    if len(questions) != 1:
        return Rejection(FORMERR, query)
    return query


def _parse_opt(rr: dnslib.RR, options: list[tuple[int, bytes]]) -> tuple[Edns, int | None]:
    """EDNS from an OPT record (its options as `opt_options` read them), and the rcode to reject with when it is bad."""
    version = (rr.ttl >> 16) & 0xFF
    do = bool(rr.ttl & 0x8000)
    ecs: ClientSubnet | None = None
    problem: int | None = None
    nsid = False
    cookie: bytes | None = None
    for code, data in options:
        if code == NSID_OPTION:
            nsid = True  # its data, if any, means nothing in a query (RFC 5001 §2.3)
            continue
        if code == COOKIE_OPTION:
            if cookie is not None or not well_formed(len(data)):
                problem = FORMERR  # RFC 7873 §5.2.2; a malformed cookie gets none back
                continue
            cookie = data
            continue
        if code != ECS_OPTION:
            continue  # unknown options are ignored (RFC 6891 §6.1.2)
        if ecs is not None:
            problem = FORMERR
            continue
        try:
            ecs = parse_client_subnet(data)
        except ValueError:
            problem = FORMERR
    edns = Edns(udp_size=rr.rclass, version=version, do=do, ecs=ecs, nsid=nsid, cookie=cookie)
    if version > 0:
        return Edns(udp_size=rr.rclass, version=version, do=do, ecs=None), BADVERS
    return edns, problem


def opt_options(data: bytes) -> list[tuple[int, bytes]]:
    """The (code, data) options of the first OPT record of a message dnslib has parsed, read from its bytes.

    dnslib drops an option with no data when it comes last (its loop wants more than 4 bytes
    left), and NSID queries send exactly that; so the options are taken from the packet.
    """
    try:
        counts = struct.unpack_from("!HHHH", data, 4)
        offset = 12
        for _ in range(counts[0]):
            offset = _skip_name(data, offset) + 4
        for _ in range(counts[1] + counts[2] + counts[3]):
            offset = _skip_name(data, offset)
            rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
            offset += 10
            if rtype == OPT:
                return _options(data[offset : offset + rdlength])
            offset += rdlength
    except (struct.error, IndexError):
        pass
    return []


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length >= 0xC0:
            return offset + 2
        offset += length + 1


def _options(rdata: bytes) -> list[tuple[int, bytes]]:
    out = []
    offset = 0
    while offset + 4 <= len(rdata):
        code, length = struct.unpack_from("!HH", rdata, offset)
        out.append((code, rdata[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    return out


def parse_client_subnet(data: bytes) -> ClientSubnet:
    """RFC 7871 §6: family, prefix lengths, and an address with no bits past the source prefix."""
    if len(data) < 4:
        raise ValueError("ECS option shorter than 4 bytes")
    family, source, scope = struct.unpack("!HBB", data[:4])
    address = data[4:]
    if family == 1:
        width, size = 32, 4
    elif family == 2:
        width, size = 128, 16
    else:
        raise ValueError(f"ECS family {family} is neither IPv4 nor IPv6")
    if source > width or scope > width:
        raise ValueError("ECS prefix longer than the address")
    if len(address) != (source + 7) // 8:
        raise ValueError("ECS address length does not match its source prefix")
    padded = address + bytes(size - len(address))
    value = int.from_bytes(padded, "big")
    if value & ((1 << (width - source)) - 1):
        raise ValueError("ECS address has bits set beyond its source prefix")
    network = ipaddress.ip_network((ipaddress.ip_address(padded), source))
    return ClientSubnet(family, source, scope, network)


# --- responses -------------------------------------------------------------------------


def to_wire(query: Query, response: Reply, limit: int, nsid: bytes | None = None, cookie: bytes | None = None) -> bytes:
    """Encode; over `limit` bytes, drop optional additional data, then truncate with TC.
    `nsid`: this server's identifier, sent when the query asked for it; `cookie`: the COOKIE option's data."""
    data = _encode(query, response, response.additional, nsid=nsid, cookie=cookie)
    if len(data) <= limit:
        return data
    if response.additional and not response.glue_required:
        data = _encode(query, response, (), nsid=nsid, cookie=cookie)
        if len(data) <= limit:
            return data
    return _encode(query, response, (), truncated=True, nsid=nsid, cookie=cookie)


def _encode(
    query: Query,
    response: Reply,
    additional: tuple[model.RRset, ...],
    truncated: bool = False,
    nsid: bytes | None = None,
    cookie: bytes | None = None,
) -> bytes:
    header = dnslib.DNSHeader(
        id=query.id,
        qr=1,
        opcode=query.opcode,
        aa=int(response.aa),
        tc=int(truncated),
        rd=int(query.rd),
        cd=int(query.cd),
        rcode=response.rcode & 0xF,
    )
    record = dnslib.DNSRecord(header)
    if query.labels:
        record.add_question(dnslib.DNSQuestion(dnslib.DNSLabel(list(query.labels)), query.qtype, query.qclass))
    if not truncated:
        for rrset in response.answer:
            record.rr.extend(_rrs(query, rrset))
        for rrset in response.authority:
            record.auth.extend(_rrs(query, rrset))
        for rrset in additional:
            record.ar.extend(_rrs(query, rrset))
    if query.edns is not None:
        opts = []
        ecs = query.edns.ecs
        if ecs is not None:
            opts.append(dnslib.EDNSOption(ECS_OPTION, ecs.to_option(min(response.ecs_scope, ecs.source))))
        if query.edns.nsid and nsid:
            opts.append(dnslib.EDNSOption(NSID_OPTION, nsid))
        if cookie is not None:
            opts.append(dnslib.EDNSOption(COOKIE_OPTION, cookie))
        record.add_ar(
            dnslib.EDNS0(
                udp_len=EDNS_UDP_SIZE,
                ext_rcode=response.rcode >> 4,
                flags="do" if query.edns.do else "",
                opts=opts,
            )
        )
    return _pack(record, query.labels)


def _pack(record: dnslib.DNSRecord, labels: tuple[bytes, ...]) -> bytes:
    """dnslib's DNSRecord.pack, except that only the whole question name is a compression target.

    The question comes back in the client's case; letting other names point into its
    suffixes would make the rest of the answer follow that case, so the same answer
    would differ byte for byte between WWW.EXAMPLE.COM and www.example.com, and the
    packet cache (dns/cache.py) could not reuse one for the other.
    """
    record.set_header_qa()
    buffer = dnslib.DNSBuffer()
    record.header.pack(buffer)
    for question in record.questions:
        question.pack(buffer)
    buffer.names = {labels: 12} if labels else {}
    for section in (record.rr, record.auth, record.ar):
        for rr in section:
            rr.pack(buffer)
    return bytes(buffer.data)


def _rrs(query: Query, rrset: model.RRset) -> list[dnslib.RR]:
    # The owner that matches the question keeps the client's case (it compresses onto it, too).
    owner = dnslib.DNSLabel(list(query.labels)) if rrset.name == query.name else dnslib.DNSLabel(rrset.name)
    rtype = model.RTYPE_CODES[rrset.rtype]
    return [dnslib.RR(owner, rtype, ttl=rrset.ttl, rdata=_rdata(rdata)) for rdata in rrset.rdatas]


def _rdata(rdata: model.Rdata) -> dnslib.RD:
    match rdata:
        case model.A(address):
            return dnslib.A(str(address))
        case model.AAAA(address):
            return dnslib.AAAA(str(address))
        case model.CNAME(target):
            return dnslib.CNAME(target)
        case model.NS(target):
            return dnslib.NS(target)
        case model.PTR(target):
            return dnslib.PTR(target)
        case model.MX(preference, exchange):
            return dnslib.MX(exchange, preference)
        case model.TXT(strings):
            return dnslib.TXT(list(strings))
        case model.SRV(priority, weight, port, target):
            return dnslib.SRV(priority, weight, port, target)
        case model.CAA(flags, tag, value):
            return dnslib.CAA(flags, tag, value)
        case model.SOA(mname, rname, serial, refresh, retry, expire, minimum):
            return dnslib.SOA(mname, rname, (serial, refresh, retry, expire, minimum))
        case model.HINFO(cpu, os):
            cpu_b, os_b = cpu.encode(), os.encode()
            return dnslib.RD(bytes([len(cpu_b)]) + cpu_b + bytes([len(os_b)]) + os_b)
        case model.Opaque(data):
            return dnslib.RD(data)
    raise TypeError(f"no wire encoding for {rdata!r}")
