"""wire.py: ECS parsing rules, and no input bytes escape as anything but WireError."""

from __future__ import annotations

import contextlib
import ipaddress

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geolb import model
from geolb.dns import wire
from geolb.dns.message import Reply


@pytest.mark.parametrize(
    ("data", "network"),
    [
        (bytes.fromhex("0001180051024500"[:14]), "81.2.69.0/24"),
        (bytes.fromhex("00010000"), "0.0.0.0/0"),
        (bytes.fromhex("00022000") + bytes.fromhex("20010db8"), "2001:db8::/32"),
        (bytes.fromhex("0001200001020304"), "1.2.3.4/32"),
        (bytes.fromhex("00011300") + bytes.fromhex("0a0120"), "10.1.32.0/19"),
    ],
)
def test_valid_client_subnets(data: bytes, network: str) -> None:
    assert wire.parse_client_subnet(data).network == ipaddress.ip_network(network)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("000318005102"),  # family 3
        bytes.fromhex("000121000102030400"),  # /33
        bytes.fromhex("00011800510245ff"),  # one byte too many
        bytes.fromhex("0001180051"),  # too few
        bytes.fromhex("0001170051024500"[:14]),  # bit 24 set beyond /23
        bytes.fromhex("00028100") + bytes(17),  # /129
    ],
)
def test_invalid_client_subnets(data: bytes) -> None:
    with pytest.raises(ValueError):
        wire.parse_client_subnet(data)


def test_ecs_echo_keeps_source_and_sets_scope() -> None:
    subnet = wire.parse_client_subnet(bytes.fromhex("0001180051024500"[:14]))
    assert subnet.to_option(18) == bytes.fromhex("00011812510245")


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_wire_error(data: bytes) -> None:
    with contextlib.suppress(wire.WireError):
        wire.parse_query(data)


QUERY = dns.message.make_query("www.example.com", "A", use_edns=0, options=[dns.edns.ECSOption("81.2.69.0", 24)]).to_wire()


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(QUERY) - 1), st.integers(0, 255)), max_size=4), st.integers(0, len(QUERY)))
def test_mutated_queries_never_raise_anything_but_wire_error(changes: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(QUERY)
    for index, value in changes:
        data[index] = value
    with contextlib.suppress(wire.WireError):
        wire.parse_query(bytes(data[:cut]))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(QUERY) - 1), st.integers(0, 255)), max_size=4), st.integers(0, len(QUERY)))
def test_whatever_parses_can_be_answered(changes: list[tuple[int, int]], cut: int) -> None:
    """A query the parser takes (or rejects with an rcode) always encodes: no answer fails on what a client sent."""
    data = bytearray(QUERY)
    for index, value in changes:
        data[index] = value
    try:
        parsed = wire.parse_query(bytes(data[:cut]))
    except wire.WireError:
        return
    query = parsed if isinstance(parsed, wire.Query) else parsed.query
    rcode = model.REFUSED if isinstance(parsed, wire.Query) else parsed.rcode
    answer = dns.message.from_wire(wire.to_wire(query, Reply(rcode, False), query.response_limit(False)))
    assert answer.id == query.id and answer.rcode() == rcode


def test_signatures_in_additional_go_before_the_addresses() -> None:
    """RFC 4035 §3.1.1: in-zone addresses in ADDITIONAL carry their RRSIGs when they fit; when not, the
    addresses go without them, and only then not at all."""
    parsed = wire.parse_query(dns.message.make_query("example.com", "MX", use_edns=0, payload=512).to_wire())
    assert isinstance(parsed, wire.Query)
    mx = model.RRset("example.com.", "MX", 300, (model.MX(10, "mail.example.com."),))
    address = model.RRset("mail.example.com.", "A", 300, (model.A(ipaddress.IPv4Address("192.0.2.25")),))

    def sections(signature_size: int) -> list[list[str]]:
        signature = model.RRset("mail.example.com.", "RRSIG", 300, (model.Opaque(bytes(signature_size)),))
        packet = wire.to_wire(parsed, Reply(model.NOERROR, True, (mx,), additional=(address, signature)), 512)
        message = dns.message.from_wire(packet)
        assert not message.flags & dns.flags.TC
        return [[dns.rdatatype.to_text(r.rdtype) for r in message.additional if r.rdtype != dns.rdatatype.OPT]]

    assert sections(100) == [["A", "RRSIG"]]
    assert sections(470) == [["A"]]  # 512 bytes hold the address, not its signature
