"""Stray and unusual packets get the RFC answer, never a crash, a silence or a log flood (SPEC §5, §7)."""

from __future__ import annotations

import random
import re
import socket
import struct
import urllib.request
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest

from tests.serverproc import DATA, RunningServer, start_server, wait_for

HEADER = struct.Struct("!HHHHHH")


@pytest.fixture(scope="module")
def one_worker() -> Iterator[RunningServer]:
    """One DNS process: every packet meets the same handler (its packet cache, its once-a-minute log)."""
    running = start_server(DATA / "zones", "--workers", "1")
    yield running
    assert running.stop() == 0


def udp(server: RunningServer, packet: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server.host, server.port))
        return sock.recv(65535)


def tcp(server: RunningServer, packet: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(len(packet).to_bytes(2, "big") + packet)
        size = int.from_bytes(_read(sock, 2), "big")
        return _read(sock, size)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def raw_query(labels: list[bytes], rdtype: int = 1, *, qid: int = 0x1234, edns: bool = False) -> bytes:
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    additional = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" if edns else b""
    return HEADER.pack(qid, 0, 1, 0, 0, 1 if edns else 0) + name + struct.pack("!HH", rdtype, 1) + additional


@pytest.mark.parametrize("edns", [False, True])
def test_a_name_with_bytes_above_0x7f_is_answered_with_its_question_byte_for_byte(one_worker: RunningServer, edns: bool) -> None:
    absent = raw_query([b"\xc4X\xe9", b"Example", b"COM"], edns=edns)
    for _ in range(3):  # the first answer fills the packet cache; the later ones come from it
        for answer in (udp(one_worker, absent), tcp(one_worker, absent)):
            message = dns.message.from_wire(answer)
            assert message.rcode() == dns.rcode.NXDOMAIN and message.flags & dns.flags.AA
            assert answer[12 : 12 + 17] == absent[12 : 12 + 17]  # the question as sent, case and all
            assert [r.rdtype for r in message.authority] == [dns.rdatatype.SOA]
    # Case folding is for ASCII only: \xc4 and \xe4 are different names, 'X' and 'x' the same.
    message = dns.message.from_wire(udp(one_worker, raw_query([b"\xe4x\xe9", b"example", b"com"], edns=edns)))
    assert message.rcode() == dns.rcode.NXDOMAIN
    # A wildcard matches such a name like any other.
    wild = raw_query([b"\xff\x80", b"static", b"example", b"com"], dns.rdatatype.TXT)
    message = dns.message.from_wire(udp(one_worker, wild))
    assert message.rcode() == dns.rcode.NOERROR and message.answer
    assert message.answer[0].name.labels[0] == b"\xff\x80"


def test_the_root_name_is_refused_with_its_question_echoed(one_worker: RunningServer) -> None:
    for edns in (False, True):
        for _ in range(3):
            query = dns.message.make_query(".", "SOA", use_edns=0 if edns else False)
            for answer in (dns.query.udp(query, one_worker.host, port=one_worker.port, timeout=2),
                           dns.query.tcp(query, one_worker.host, port=one_worker.port, timeout=2)):  # fmt: skip
                assert answer.rcode() == dns.rcode.REFUSED
                assert answer.question == query.question


def test_a_label_longer_than_63_bytes_is_formerr_and_logged_once(one_worker: RunningServer) -> None:
    packet = raw_query([b"a" * 64, b"example", b"com"])
    for _ in range(50):
        answer = udp(one_worker, packet)
        assert answer[:2] == packet[:2] and answer[3] & 0xF == dns.rcode.FORMERR and answer[4:6] == b"\x00\x00"
    log = one_worker.stderr()
    assert "Traceback" not in log and "ERROR" not in log
    assert len(re.findall(r"malformed packet \(bad-label\)", log)) == 1


def test_a_query_signed_with_an_unknown_tsig_key_gets_notauth_badkey(one_worker: RunningServer) -> None:
    keyring = dns.tsigkeyring.from_text({"nobody.example.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    query = dns.message.make_query("www.example.com", "A")
    query.use_tsig(keyring, "nobody.example.")
    for send in (dns.query.udp, dns.query.tcp):
        with pytest.raises(dns.tsig.PeerBadKey):  # dnspython reads the BADKEY in the answer's TSIG
            send(query, one_worker.host, port=one_worker.port, timeout=2)
        answer = dns.message.from_wire(_send_raw(one_worker, query.to_wire(), send is dns.query.tcp), keyring=False)
        assert answer.rcode() == dns.rcode.NOTAUTH and answer.question == query.question
        assert not answer.answer and not answer.authority
        assert answer.tsig is not None
        tsig = answer.tsig[0]
        assert answer.tsig.name == dns.name.from_text("nobody.example.") and tsig.error == 17 and tsig.mac == b""
        assert tsig.algorithm == dns.tsig.default_algorithm and tsig.original_id == query.id


def _send_raw(server: RunningServer, packet: bytes, over_tcp: bool) -> bytes:
    return tcp(server, packet) if over_tcp else udp(server, packet)


def test_notimp_copies_rd_and_not_cd(one_worker: RunningServer) -> None:
    query = dns.message.make_query("www.example.com", "A")
    query.set_opcode(dns.opcode.STATUS)
    query.flags |= dns.flags.CD | dns.flags.RD
    answer = dns.query.udp(query, one_worker.host, port=one_worker.port, timeout=2)
    assert answer.rcode() == dns.rcode.NOTIMP
    assert answer.flags & dns.flags.RD and not answer.flags & dns.flags.CD
    query.flags &= ~dns.flags.RD
    answer = dns.query.udp(query, one_worker.host, port=one_worker.port, timeout=2)
    assert not answer.flags & dns.flags.RD and not answer.flags & dns.flags.CD


def garbled(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Malformed packets of every kind geolb counts, a few hundred each."""
    good = dns.message.make_query("www.example.com", "A", use_edns=0).to_wire()
    for _ in range(300):
        yield "short", bytes(rng.getrandbits(8) for _ in range(rng.randrange(12)))
        qid = rng.getrandbits(16).to_bytes(2, "big")
        yield "response", qid + b"\x80" + good[3:]
        yield "unparseable", qid + good[2:-3]  # cut inside the OPT record
        yield "bad-label", qid + raw_query([bytes([97 + rng.randrange(26)]) * rng.randrange(64, 192), b"com"])[2:]
        yield "long-name", qid + raw_query([b"a" * 63] * 4 + [b"b"])[2:]
        question = good[12:-11]
        yield "question-count", qid + HEADER.pack(0, 0, 2, 0, 0, 0)[2:] + question + question
        yield "opt", qid + good[2:11] + b"\x02" + good[12:] + good[-11:]
        ecs = b"\x00\x08\x00\x08\x00\x01\x18\x00\x0a\x00\x00\x01"  # a /24 with 4 bytes of address
        yield "ecs", qid + good[2:-2] + len(ecs).to_bytes(2, "big") + ecs
        cookie = b"\x00\x0a\x00\x03abc"
        yield "cookie", qid + good[2:-2] + len(cookie).to_bytes(2, "big") + cookie


def metrics(server: RunningServer) -> str:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
        return text


def test_garbled_packets_are_counted_and_logged_once_per_kind() -> None:
    server = start_server(DATA / "zones", "--workers", "1")
    try:
        sent: dict[str, int] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for kind, packet in garbled(random.Random(21)):
                sock.sendto(packet, (server.host, server.port))
                sent[kind] = sent.get(kind, 0) + 1
        assert server.query("www.example.com", "A").rcode() == dns.rcode.NOERROR

        def counted() -> bool:
            text = metrics(server)
            return all(f'geolb_dns_client_errors_total{{kind="{kind}"}} {float(n)}' in text for kind, n in sent.items())

        wait_for(counted, timeout=10)
        log = server.stderr()
        assert "Traceback" not in log
        for kind in sent:
            assert len(re.findall(rf"malformed packet \({re.escape(kind)}\)", log)) == 1, kind
        assert len(log.splitlines()) < 30
    finally:
        assert server.stop() == 0
