"""EDNS options read from the query's bytes (dnslib drops a last option without data): against dnspython's encoder."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rrset
from hypothesis import given
from hypothesis import strategies as st

from geolb.dns import wire

OPTION = st.tuples(st.integers(0, 65535).filter(lambda c: c not in (8, 10, 11, 12)), st.binary(max_size=20))


@given(st.lists(OPTION, max_size=5), st.booleans())
def test_options_come_out_as_they_went_in(options: list[tuple[int, bytes]], compressed_name: bool) -> None:
    query = dns.message.make_query("www.example.com", "A", use_edns=0, options=[dns.edns.GenericOption(c, d) for c, d in options])
    if compressed_name:
        query.additional.append(dns.rrset.from_text("www.example.com.", 60, "IN", "A", "192.0.2.1"))  # a pointer to the question
    assert wire.opt_options(query.to_wire()) == options


def test_a_last_nsid_option_with_no_data_is_seen() -> None:
    query = dns.message.make_query("www.example.com", "A", use_edns=0, options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
    parsed = wire.parse_query(query.to_wire())
    assert isinstance(parsed, wire.Query) and parsed.edns is not None and parsed.edns.nsid


def test_garbage_gives_no_options() -> None:
    assert wire.opt_options(b"\x00" * 11) == []
    assert wire.opt_options(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x05abc") == []
