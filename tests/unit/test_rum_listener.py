"""The RUM listener's pure parts: who a beacon speaks for, its rate, its body (geolb/http/rum.py)."""

from __future__ import annotations

import ipaddress

import pytest

from geolb.http.rum import BeaconRate, client_address, network_key, network_of, parse_address

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48"))


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("192.0.2.1", [], "192.0.2.1"),
        ("192.0.2.1", ["198.51.100.9"], "192.0.2.1"),  # no proxy of ours: the header is anybody's word
        ("::ffff:192.0.2.1", [], "192.0.2.1"),  # a dual-stack socket's view of an IPv4 peer
        ("10.1.1.1", ["198.51.100.9"], "198.51.100.9"),
        ("10.1.1.1", ["198.51.100.9, 203.0.113.5, 10.2.2.2"], "198.51.100.9"),  # left-most
        ("10.1.1.1", ["10.3.3.3, 203.0.113.5"], "203.0.113.5"),  # trusted hops passed over
        ("10.1.1.1", ["garbage, 203.0.113.5"], "203.0.113.5"),
        ("10.1.1.1", ["10.3.3.3", "203.0.113.5"], "203.0.113.5"),  # several header lines, in order
        ("10.1.1.1", ["203.0.113.5:4711"], "203.0.113.5"),
        ("10.1.1.1", ["[2001:db8::7]:443"], "2001:db8::7"),
        ("10.1.1.1", ["2001:db8::7"], "2001:db8::7"),
        ("10.1.1.1", ['"2001:db8::7"'], "2001:db8::7"),
        ("2001:db8:ffff::1", ["2001:db8:ffff::2, 192.0.2.44"], "192.0.2.44"),
        ("10.1.1.1", [], None),  # the proxy named nobody
        ("10.1.1.1", ["10.2.2.2, unknown"], None),
    ],
)
def test_client_address(peer: str, headers: list[str], client: str | None) -> None:
    found = client_address(ipaddress.ip_address(peer), headers, TRUSTED)
    assert found == (None if client is None else ipaddress.ip_address(client))


def test_network_key_and_network_of() -> None:
    v4, v6 = network_key(ipaddress.ip_address("192.0.2.77")), network_key(ipaddress.ip_address("2001:db8:1:2:3::1"))
    assert str(network_of(v4)) == "192.0.2.0/24"
    assert str(network_of(v6)) == "2001:db8:1::/48"
    assert network_key(ipaddress.ip_address("192.0.2.1")) == v4
    assert network_key(ipaddress.ip_address("::c000:201")) != v4  # an IPv6 address with the same bits is another network
    assert str(network_of(network_key(ipaddress.ip_address("ffff:ffff:ffff::1")))) == "ffff:ffff:ffff::/48"


def test_rate_per_network_refills_over_a_minute() -> None:
    rate = BeaconRate(3)
    net, other = 0xC00002, 0xC63364
    assert [rate.allow(net, 0.0) for _ in range(4)] == [True, True, True, False]
    assert rate.allow(other, 0.0)
    assert not rate.allow(net, 19.0)  # a third of a beacon back in 19 s... not yet one
    assert rate.allow(net, 21.0)  # 3 a minute: one back every 20 s
    assert not rate.allow(net, 21.5)
    assert rate.allow(net, 200.0) and rate.allow(net, 200.0) and rate.allow(net, 200.0)  # full again, never more
    assert not rate.allow(net, 200.0)


def test_rate_table_forgets_idle_networks() -> None:
    rate = BeaconRate(3)
    for n in range(100):
        rate.allow(n, 0.0)
    assert len(rate) == 100
    rate.allow(1000, 61.0)  # the next sweep: full buckets dropped
    assert len(rate) == 1


def test_rate_zero_is_no_limit() -> None:
    rate = BeaconRate(0)
    net = 0xC00002
    assert all(rate.allow(net, 0.0) for _ in range(1000))


@pytest.mark.parametrize("text", ["192.0.2.1", "0.0.0.0", "2001:db8::1", "::ffff:192.0.2.1", "::", "fe80::1%eth0"])
def test_parse_address_as_ipaddress(text: str) -> None:
    assert parse_address(text) == ipaddress.ip_address(text)


@pytest.mark.parametrize("text", ["", "unknown", "192.0.2", "192.0.2.256", "1.2.3.4.5", "2001:db8::1::2", " 192.0.2.1"])
def test_parse_address_refuses_what_ipaddress_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)
