"""DNS wire format: bytes -> `Query`, `Reply` -> bytes (EDNS, ECS, truncation). The only dnslib importer; knows nothing of geo."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from dataclasses import dataclass

import dnslib

from geolb import model
from geolb.dns.cookies import well_formed
from geolb.dns.message import Reply
from geolb.dns.names import key_to_labels, labels_to_key
from geolb.model import BADKEY, BADVERS, FORMERR, NOERROR, NOTAUTH, NOTIMP

OPT, TSIG, ECS_OPTION, NSID_OPTION, COOKIE_OPTION = 41, 250, 8, 3, 10
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
    labels: tuple[bytes, ...]  # the question name as sent, case kept (any bytes: RFC 2181 §11)
    name: str  # lookup key, "www.example.com.": ASCII letters lower-cased, other bytes as latin-1
    qtype: int
    qclass: int
    edns: Edns | None
    question: bool = True  # False: no question to echo (QDCOUNT 0, or one too malformed to echo)
    tsig: bytes | None = None  # the TSIG record a BADKEY answer echoes (RFC 8945 §5.2.2), unsigned

    def response_limit(self, tcp: bool) -> int:
        return response_limit(None if self.edns is None else self.edns.udp_size, tcp)


@dataclass(frozen=True)
class Rejection:
    """A query answered with an error code before lookup (FORMERR, NOTIMP, BADVERS, NOTAUTH).

    `kind` names the client's error when the query was malformed (see CLIENT_ERRORS); "" when it was not."""

    rcode: int
    query: Query  # header, question (when `query.question`) and EDNS to echo
    kind: str = ""


# The kinds of malformed packet counted in /metrics (geolb_dns_client_errors_total) and logged once a minute.
CLIENT_ERRORS = (
    "short",  # shorter than a DNS header
    "unparseable",  # records that do not parse: dropped
    "response",  # QR set: dropped
    "bad-label",  # a label longer than 63 bytes (or of a reserved type) in the question: FORMERR
    "long-name",  # a question name longer than 255 bytes: FORMERR
    "question-count",  # QDCOUNT other than 1: FORMERR
    "opt",  # more than one OPT record: FORMERR
    "ecs",  # a malformed client subnet option: FORMERR
    "cookie",  # a malformed or repeated COOKIE option: FORMERR
)


class WireError(ValueError):
    """Bytes that do not parse as a DNS query: dropped without an answer. `kind`: one of CLIENT_ERRORS."""

    def __init__(self, message: str, kind: str = "unparseable") -> None:
        super().__init__(message)
        self.kind = kind


class _BadName(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind


def _question_name(data: bytes) -> tuple[tuple[bytes, ...], int] | None:
    """The first question's labels and where its name ends, read from the bytes (dnslib wants UTF-8
    labels; RFC 2181 §11 allows any byte). None when the name is compressed (dnslib reads it)."""
    labels: list[bytes] = []
    offset = 12
    size = 1
    while True:
        if offset >= len(data):
            raise WireError("question name past the end of the packet")
        length = data[offset]
        if length == 0:
            return tuple(labels), offset + 1
        if length >= 0xC0:
            return None
        if length > 63:
            raise _BadName("bad-label")
        size += length + 1
        if size > 255:
            raise _BadName("long-name")
        labels.append(data[offset + 1 : offset + 1 + length])
        offset += length + 1


def parse_query(data: bytes) -> Query | Rejection:
    """Parse a query; raises WireError for what must be dropped (unparseable, or a response)."""
    if len(data) < 12:
        raise WireError("shorter than a DNS header", "short")
    if data[2] & 0x80:
        raise WireError("a response, not a query", "response")
    named: tuple[tuple[bytes, ...], int] | None = None
    if data[4:6] != b"\x00\x00":
        try:
            named = _question_name(data)
        except _BadName as bad:
            return _malformed_name(data, bad.kind)
    if named is not None and not b"".join(named[0]).isascii():
        # dnslib refuses labels that are not UTF-8: give it the same packet with ASCII in their place
        # (every offset unchanged), and keep the name as sent.
        clean = bytearray(data)
        offset = 12
        for label in named[0]:
            clean[offset + 1 : offset + 1 + len(label)] = bytes(b if b < 0x80 else 0x78 for b in label)
            offset += len(label) + 1
        parsed = _parse(bytes(clean))
    else:
        parsed = _parse(data)
    if named is None:
        return parsed
    labels = named[0]
    query = parsed if isinstance(parsed, Query) else parsed.query
    if not query.question or query.labels == labels:
        return parsed
    query = dataclasses.replace(query, labels=labels, name=labels_to_key(labels))
    return query if isinstance(parsed, Query) else dataclasses.replace(parsed, query=query)


def _malformed_name(data: bytes, kind: str) -> Rejection:
    """FORMERR for a question name no DNS message may hold; the question is not echoed (it cannot be)."""
    header = dnslib.DNSHeader.parse(dnslib.DNSBuffer(data[:12]))
    query = Query(header.id, header.opcode, bool(header.rd), bool(header.cd), (), ".", 0, 0, None, question=False)
    return Rejection(NOTIMP if header.opcode != 0 else FORMERR, query, kind)


def _parse(data: bytes) -> Query | Rejection:
    try:
        record = dnslib.DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises several kinds on bad input; all mean "drop"
        raise WireError(f"unparseable: {exc}") from None
    header = record.header

    edns: Edns | None = None
    problem: int | None = None
    kind = ""
    opts = [rr for rr in record.ar if rr.rtype == OPT]
    if len(opts) > 1:
        problem, kind = FORMERR, "opt"
    elif opts:
        edns, problem, kind = _parse_opt(opts[0], opt_options(data))
    tsig = [rr for rr in record.ar if rr.rtype == TSIG]

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
        question=len(questions) == 1,
    )
    if header.opcode != 0:
        return Rejection(NOTIMP, query)
    if problem is not None:
        return Rejection(problem, query, kind)
    if tsig:
        # No TSIG key is configured: every key is unknown (RFC 8945 §5.2.2), and the answer is unsigned.
        return Rejection(NOTAUTH, dataclasses.replace(query, tsig=_badkey(tsig[-1], header.id)))
    if not questions and edns is not None and edns.cookie is not None:
        return Rejection(NOERROR, query)  # RFC 7873 §5.4: a query for a server cookie alone
    if len(questions) != 1:
        return Rejection(FORMERR, query, "question-count")
    return query


def _badkey(rr: dnslib.RR, query_id: int) -> bytes | None:
    """The TSIG record of a BADKEY answer (RFC 8945 §5.3.2): the query's key name, algorithm, time and fudge,
    no MAC, error BADKEY. None when the query's TSIG data does not even hold those."""
    buffer = dnslib.DNSBuffer()
    rdata = bytes(getattr(rr.rdata, "data", b""))
    try:
        end = _skip_name(rdata, 0)
        if any(b >= 0xC0 for b in rdata[:end]) or len(rdata) < end + 10:
            return None
        algorithm, time_and_fudge = rdata[:end], rdata[end : end + 8]
    except IndexError:
        return None
    body = algorithm + time_and_fudge + struct.pack("!HHHH", 0, query_id, BADKEY, 0)
    buffer.encode_name_nocompress(rr.rname)
    return bytes(buffer.data) + struct.pack("!HHIH", TSIG, 255, 0, len(body)) + body


def _parse_opt(rr: dnslib.RR, options: list[tuple[int, bytes]]) -> tuple[Edns, int | None, str]:
    """EDNS from an OPT record (its options as `opt_options` read them), and the rcode to reject with when it is bad."""
    version = (rr.ttl >> 16) & 0xFF
    do = bool(rr.ttl & 0x8000)
    ecs: ClientSubnet | None = None
    problem: int | None = None
    kind = ""
    nsid = False
    cookie: bytes | None = None
    for code, data in options:
        if code == NSID_OPTION:
            nsid = True  # its data, if any, means nothing in a query (RFC 5001 §2.3)
            continue
        if code == COOKIE_OPTION:
            if cookie is not None or not well_formed(len(data)):
                problem, kind = FORMERR, "cookie"  # RFC 7873 §5.2.2; a malformed cookie gets none back
                continue
            cookie = data
            continue
        if code != ECS_OPTION:
            continue  # unknown options are ignored (RFC 6891 §6.1.2)
        if ecs is not None:
            problem, kind = FORMERR, "ecs"
            continue
        try:
            ecs = parse_client_subnet(data)
        except ValueError:
            problem, kind = FORMERR, "ecs"
    edns = Edns(udp_size=rr.rclass, version=version, do=do, ecs=ecs, nsid=nsid, cookie=cookie)
    if version > 0:
        return Edns(udp_size=rr.rclass, version=version, do=do, ecs=None), BADVERS, ""
    return edns, problem, kind


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
        unsigned = tuple(rrset for rrset in response.additional if rrset.rtype != "RRSIG")
        if len(unsigned) < len(response.additional) and unsigned:  # the addresses without their signatures
            data = _encode(query, response, unsigned, nsid=nsid, cookie=cookie)
            if len(data) <= limit:
                return data
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
        cd=int(query.cd and response.rcode != NOTIMP),  # NOTIMP copies RD alone
        rcode=response.rcode & 0xF,
    )
    record = dnslib.DNSRecord(header)
    if query.question:
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
    data = _pack(record, query.labels if query.question else None)
    if query.tsig is not None:  # last in ADDITIONAL, after the OPT (RFC 8945 §5.3.2: unsigned)
        count = (data[10] << 8 | data[11]) + 1
        data = data[:10] + count.to_bytes(2, "big") + data[12:] + query.tsig
    return data


def _pack(record: dnslib.DNSRecord, labels: tuple[bytes, ...] | None) -> bytes:
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
    buffer.names = {labels: 12} if labels else {}  # the root (empty labels) is never a target
    for section in (record.rr, record.auth, record.ar):
        for rr in section:
            rr.pack(buffer)
    return bytes(buffer.data)


def _rrs(query: Query, rrset: model.RRset) -> list[dnslib.RR]:
    # The owner that matches the question keeps the client's case (it compresses onto it, too).
    if rrset.name == query.name:
        owner = dnslib.DNSLabel(list(query.labels))
    else:  # dnslib would IDNA-encode text: a name with other bytes goes as labels
        owner = dnslib.DNSLabel(rrset.name if rrset.name.isascii() else key_to_labels(rrset.name))
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
