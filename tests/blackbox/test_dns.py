"""SPEC §5 against the real server over UDP and TCP, one test per behaviour."""

from __future__ import annotations

import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.serverproc import RunningServer

NEGATIVE_TTL = 60  # min(SOA TTL 3600, minimum 60)


def rrset(message: dns.message.Message, section: str, name: str, rdtype: str) -> dns.rrset.RRset | None:
    for candidate in getattr(message, section):
        if candidate.name == dns.name.from_text(name) and candidate.rdtype == dns.rdatatype.from_text(rdtype):
            return candidate
    return None


def texts(found: dns.rrset.RRset | None) -> set[str]:
    assert found is not None
    return {rdata.to_text() for rdata in found}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_apex_soa_is_authoritative_without_recursion(server: RunningServer, tcp: bool) -> None:
    response = server.query("example.com", "SOA", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    soa = rrset(response, "answer", "example.com.", "SOA")
    assert soa is not None and soa.ttl == 3600
    assert soa[0].serial == 2026112201
    assert soa[0].mname == dns.name.from_text("ns1.example.com.")
    assert soa[0].rname == dns.name.from_text("hostmaster.example.com.")
    assert soa[0].minimum == 60


def test_apex_ns_carries_glue(server: RunningServer) -> None:
    response = server.query("example.com", "NS")
    assert texts(rrset(response, "answer", "example.com.", "NS")) == {
        "ns1.example.com.",
        "ns2.example.com.",
        "ns.elsewhere.example.org.",
    }
    assert texts(rrset(response, "additional", "ns1.example.com.", "A")) == {"192.0.2.53"}
    assert texts(rrset(response, "additional", "ns1.example.com.", "AAAA")) == {"2001:db8::53"}
    assert texts(rrset(response, "additional", "ns2.example.com.", "A")) == {"198.51.100.53"}
    assert rrset(response, "additional", "ns.elsewhere.example.org.", "A") is None


def test_in_zone_nameserver_names_answer_their_addresses(server: RunningServer) -> None:
    response = server.query("ns1.example.com", "AAAA")
    assert texts(rrset(response, "answer", "ns1.example.com.", "AAAA")) == {"2001:db8::53"}


@pytest.mark.parametrize(
    ("name", "rdtype", "expected", "ttl"),
    [
        ("mail.example.com", "A", {"192.0.2.25"}, 300),
        ("mail.example.com", "AAAA", {"2001:db8::25"}, 300),
        ("example.com", "MX", {"10 mail.example.com.", "20 mail.example.net."}, 3600),
        ("example.com", "TXT", {'"v=spf1 -all"'}, 3600),
        ("example.com", "CAA", {'0 issue "letsencrypt.org"'}, 3600),
        ("_sip._udp.example.com", "SRV", {"10 5 5060 sip.example.com."}, 3600),
        ("ptr.example.com", "PTR", {"mail.example.com."}, 3600),
    ],
)
def test_static_records_of_every_type(server: RunningServer, name: str, rdtype: str, expected: set[str], ttl: int) -> None:
    response = server.query(name, rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    found = rrset(response, "answer", name + ".", rdtype)
    assert texts(found) == expected
    assert found is not None and found.ttl == ttl


@pytest.mark.parametrize("name", ["example.org", "com", "notexample.com", "example.com.evil.net"])
def test_names_outside_every_zone_are_refused(server: RunningServer, name: str) -> None:
    response = server.query(name, "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert not response.answer


def test_absent_name_is_nxdomain_with_soa(server: RunningServer) -> None:
    response = server.query("nothing-here.example.com", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert not response.answer
    soa = rrset(response, "authority", "example.com.", "SOA")
    assert soa is not None and soa.ttl == NEGATIVE_TTL


def test_present_name_without_the_type_is_nodata_with_soa(server: RunningServer) -> None:
    response = server.query("mail.example.com", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer
    soa = rrset(response, "authority", "example.com.", "SOA")
    assert soa is not None and soa.ttl == NEGATIVE_TTL


def test_empty_non_terminal_is_nodata_not_nxdomain(server: RunningServer) -> None:
    response = server.query("_udp.example.com", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer
    assert rrset(response, "authority", "example.com.", "SOA") is not None


def test_cname_is_followed_to_a_geo_record(server: RunningServer) -> None:
    response = server.query("docs.example.com", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(rrset(response, "answer", "docs.example.com.", "CNAME")) == {"www.example.com."}
    # No ECS, client 127.0.0.1 has no location: the first region in file order (SPEC §3 rule 2c).
    assert texts(rrset(response, "answer", "www.example.com.", "A")) == {"192.0.2.10", "192.0.2.11"}


def test_cname_is_followed_into_another_served_zone(server: RunningServer) -> None:
    response = server.query("cross.example.com", "A")
    assert texts(rrset(response, "answer", "cross.example.com.", "CNAME")) == {"www.example.net."}
    assert texts(rrset(response, "answer", "www.example.net.", "A")) == {"203.0.113.80"}


def test_cname_to_a_name_we_do_not_serve_stops_there(server: RunningServer) -> None:
    response = server.query("outside.example.com", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.CNAME]


def test_cname_to_missing_name_is_nxdomain_with_the_chain(server: RunningServer) -> None:
    response = server.query("to-nowhere.example.com", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert texts(rrset(response, "answer", "to-nowhere.example.com.", "CNAME")) == {"missing.example.com."}
    assert rrset(response, "authority", "example.com.", "SOA") is not None


def test_cname_loop_is_cut(server: RunningServer) -> None:
    response = server.query("loop1.example.com", "A", tcp=True)
    assert response.rcode() == dns.rcode.NOERROR
    assert 1 <= len(response.answer) <= 12
    assert all(r.rdtype == dns.rdatatype.CNAME for r in response.answer)


def test_cname_query_returns_the_cname_itself(server: RunningServer) -> None:
    response = server.query("docs.example.com", "CNAME")
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.CNAME]


def test_wildcard_synthesizes_under_the_name_asked(server: RunningServer) -> None:
    for name in ("anything.static.example.com", "two.labels.static.example.com"):
        response = server.query(name, "A")
        assert response.rcode() == dns.rcode.NOERROR
        assert texts(rrset(response, "answer", name + ".", "A")) == {"192.0.2.99"}


def test_wildcard_does_not_cover_existing_names(server: RunningServer) -> None:
    response = server.query("exists.static.example.com", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer  # the name exists with TXT only: NODATA, not the wildcard's A


def test_wildcard_with_other_type_is_nodata(server: RunningServer) -> None:
    response = server.query("anything.static.example.com", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer
    assert rrset(response, "authority", "example.com.", "SOA") is not None


def test_wildcard_cname_is_synthesized_and_followed(server: RunningServer) -> None:
    response = server.query("x.alias.example.com", "A")
    assert texts(rrset(response, "answer", "x.alias.example.com.", "CNAME")) == {"mail.example.com."}
    assert texts(rrset(response, "answer", "mail.example.com.", "A")) == {"192.0.2.25"}


def test_wildcard_owner_itself_is_nxdomain_outside(server: RunningServer) -> None:
    # `static.example.com` is an empty non-terminal: NODATA; `other.example.com` is not covered.
    assert server.query("static.example.com", "A").rcode() == dns.rcode.NOERROR
    assert server.query("x.other.example.com", "A").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name", ["sub.example.com", "host.sub.example.com", "a.b.sub.example.com"])
def test_delegation_is_a_referral(server: RunningServer, name: str) -> None:
    response = server.query(name, "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.flags & dns.flags.AA
    assert not response.answer
    assert texts(rrset(response, "authority", "sub.example.com.", "NS")) == {"ns1.sub.example.com.", "ns.elsewhere.example.org."}
    assert texts(rrset(response, "additional", "ns1.sub.example.com.", "A")) == {"192.0.2.153"}


def test_ds_at_the_delegation_is_answered_by_the_parent(server: RunningServer) -> None:
    response = server.query("sub.example.com", "DS")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert rrset(response, "authority", "example.com.", "SOA") is not None


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_lookup_is_case_insensitive_and_echoes_the_case_asked(server: RunningServer, tcp: bool) -> None:
    response = server.query("MaIl.ExAmPlE.CoM", "A", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.question[0].name.to_text() == "MaIl.ExAmPlE.CoM."
    assert texts(rrset(response, "answer", "mail.example.com.", "A")) == {"192.0.2.25"}


def test_edns_answer_carries_opt_with_1232(server: RunningServer) -> None:
    response = server.query("example.com", "SOA", payload=4096)
    assert response.edns == 0
    assert response.payload == 1232


def test_no_opt_without_edns(server: RunningServer) -> None:
    response = server.query("example.com", "SOA", edns=False)
    assert response.edns == -1


def test_edns_version_above_zero_is_badvers(server: RunningServer) -> None:
    message = dns.message.make_query("example.com", "SOA", use_edns=1)
    response = server.send(message)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0


def test_unknown_edns_options_are_ignored(server: RunningServer) -> None:
    option = dns.edns.GenericOption(65001, b"\x01\x02\x03")
    message = dns.message.make_query("mail.example.com", "A", use_edns=0, options=[option])
    response = server.send(message)
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(rrset(response, "answer", "mail.example.com.", "A")) == {"192.0.2.25"}


def test_do_bit_is_echoed(server: RunningServer) -> None:
    message = dns.message.make_query("mail.example.com", "A", use_edns=0, want_dnssec=True)
    response = server.send(message)
    assert response.ednsflags & dns.flags.DO


def test_large_answer_is_truncated_over_udp_and_whole_over_tcp(server: RunningServer) -> None:
    small = dns.message.make_query("big.example.com", "TXT")
    response = server.send(small)
    assert response.flags & dns.flags.TC
    assert len(response.to_wire()) <= 512
    whole = server.send(dns.message.make_query("big.example.com", "TXT"), tcp=True)
    assert not whole.flags & dns.flags.TC
    assert len(texts(rrset(whole, "answer", "big.example.com.", "TXT"))) == 4


def test_edns_buffer_lets_the_large_answer_through(server: RunningServer) -> None:
    response = server.query("big.example.com", "TXT", payload=1232)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 4


def test_opcode_other_than_query_is_notimp(server: RunningServer) -> None:
    message = dns.message.make_query("example.com", "SOA")
    message.set_opcode(dns.opcode.NOTIFY)
    response = server.send(message)
    assert response.rcode() == dns.rcode.NOTIMP


def test_no_question_is_formerr(server: RunningServer) -> None:
    packet = struct.pack("!HHHHHH", 0x1234, 0, 0, 0, 0, 0)
    response = udp_raw(server, packet)
    assert response is not None
    assert dns.message.from_wire(response).rcode() == dns.rcode.FORMERR


def test_two_questions_is_formerr(server: RunningServer) -> None:
    one = dns.message.make_query("example.com", "SOA", use_edns=False).to_wire()
    question = one[12:]
    packet = one[:4] + struct.pack("!H", 2) + one[6:12] + question + question
    response = udp_raw(server, packet)
    assert response is not None
    parsed = dns.message.from_wire(response, question_only=True)
    assert parsed.rcode() == dns.rcode.FORMERR
    assert parsed.id == dns.message.from_wire(one).id


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_zone_transfers_are_refused(server: RunningServer, rdtype: str) -> None:
    message = dns.message.make_query("example.com", rdtype)
    response = server.send(message, tcp=True)
    assert response.rcode() == dns.rcode.REFUSED


def test_any_gets_one_rrset(server: RunningServer) -> None:
    response = server.query("example.com", "ANY")
    assert response.rcode() == dns.rcode.NOERROR
    assert len(response.answer) == 1


def test_any_on_a_geo_name_gets_synthesized_hinfo(server: RunningServer) -> None:
    response = server.query("www.example.com", "ANY")
    assert len(response.answer) == 1
    assert response.answer[0].rdtype == dns.rdatatype.HINFO
    assert response.answer[0][0].cpu == b"RFC8482"


def test_responses_sent_to_us_are_dropped(server: RunningServer) -> None:
    message = dns.message.make_query("example.com", "SOA")
    message.flags |= dns.flags.QR
    assert udp_raw(server, message.to_wire(), timeout=0.5) is None


def test_non_in_class_is_refused(server: RunningServer) -> None:
    message = dns.message.make_query("example.com", "SOA", rdclass=dns.rdataclass.CH)
    assert server.send(message).rcode() == dns.rcode.REFUSED


def test_ipv6_listener_answers_udp_and_tcp(server: RunningServer) -> None:
    host, port = server.dns[1]
    assert host == "::1"
    for tcp in (False, True):
        response = server.query("mail.example.com", "AAAA", tcp=tcp, host=host, port=port)
        assert texts(rrset(response, "answer", "mail.example.com.", "AAAA")) == {"2001:db8::25"}


def udp_raw(server: RunningServer, packet: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server.host, server.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None
