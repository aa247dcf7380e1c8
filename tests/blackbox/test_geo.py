"""SPEC §3 against the real server with MaxMind's City test database: ECS, ranking, scope, weights."""

from __future__ import annotations

import collections
import csv
import ipaddress
import json
import math
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.serverproc import DATA, ROOT, RunningServer, geolb_command, start_server

ZONES = DATA / "geo-zones"
CITY_DB = DATA / "GeoIP2-City-Test.mmdb"
REGIONS = {  # the `web` pool of geo.example.yaml: location, IPv4, IPv6
    "virginia": ((39.04, -77.49), {"192.0.2.10", "192.0.2.11"}, {"2001:db8:1::10"}),
    "oregon": ((45.6, -121.2), {"192.0.2.20"}, {"2001:db8:2::20"}),
    "dublin": ((53.35, -6.26), {"198.51.100.10"}, {"2001:db8:3::10"}),
    "frankfurt": ((50.11, 8.68), {"198.51.100.20"}, set()),
    "tokyo": ((35.68, 139.69), {"203.0.113.30"}, {"2001:db8:5::30"}),
    "singapore": ((1.29, 103.85), {"203.0.113.40"}, {"2001:db8:6::40"}),
    "sydney": ((-33.87, 151.21), {"203.0.113.50"}, {"2001:db8:7::50"}),
}


@pytest.fixture(scope="module")
def geo() -> Iterator[RunningServer]:
    running = start_server(ZONES, geoip=CITY_DB)
    yield running
    assert running.stop() == 0


def km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def test_networks() -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[float, float], str]]:
    """(network, coordinates, country) for every located network of the test database."""
    out = []
    for entry in json.loads((DATA / "GeoIP2-City-Test.json").read_text()):
        for text, record in entry.items():
            where = record.get("location") or {}
            country = (record.get("country") or {}).get("iso_code")
            if where.get("latitude") is None or country is None:
                continue
            network = ipaddress.ip_network(text)
            if isinstance(network, ipaddress.IPv6Network) and text.startswith("::") and "." in text:
                network = ipaddress.ip_network(f"{text[2:].split('/')[0]}/{network.prefixlen - 96}")
            out.append((network, (float(where["latitude"]), float(where["longitude"])), country))
    return out


LOCATED = test_networks()
test_networks.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def answer_addresses(response: dns.message.Message, rdtype: str = "A") -> set[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return {rdata.to_text() for rrset in response.answer if rrset.rdtype == wanted for rdata in rrset}


def region_of(addresses: set[str]) -> str:
    found = {name for name, (_, v4, v6) in REGIONS.items() if addresses & (v4 | v6)}
    assert len(found) == 1, addresses
    return found.pop()


def ecs_scope(response: dns.message.Message) -> int:
    for option in response.options:
        if isinstance(option, dns.edns.ECSOption):
            return int(option.scopelen)
    raise AssertionError("no ECS option in the answer")


def nearest(where: tuple[float, float], family: int) -> str:
    candidates = [name for name, (_, v4, v6) in REGIONS.items() if (v4 if family == 4 else v6)]
    return min(candidates, key=lambda name: km(where, REGIONS[name][0]))


def test_the_test_database_covers_several_countries() -> None:
    assert len({country for _, _, country in LOCATED}) >= 10


@pytest.mark.parametrize(("network", "where", "country"), LOCATED, ids=[f"{n}-{c}" for n, _, c in LOCATED])
def test_ecs_client_gets_the_nearest_region(geo: RunningServer, network: Any, where: tuple[float, float], country: str) -> None:
    for rdtype, family in (("A", 4), ("AAAA", 6)):
        response = geo.query("www.geo.example", rdtype, ecs=f"{network.network_address}/{network.prefixlen}")
        assert response.rcode() == dns.rcode.NOERROR
        assert region_of(answer_addresses(response, rdtype)) == nearest(where, family), (network, country, rdtype)
        scope = ecs_scope(response)
        assert 0 < scope <= network.prefixlen


def test_scope_is_true_for_every_address_it_covers(geo: RunningServer) -> None:
    """Any address inside the returned scope gets the same region as the client did."""
    for network, _, _ in LOCATED[:: max(1, len(LOCATED) // 12)]:
        source = network.prefixlen if network.version == 6 else 32
        response = geo.query("www.geo.example", "A", ecs=f"{network.network_address}/{source}")
        region = region_of(answer_addresses(response))
        scope = ecs_scope(response)
        covered = ipaddress.ip_network((network.network_address, scope), strict=False)
        for sample in _samples(covered):
            prefix = 32 if sample.version == 4 else 128
            other = geo.query("www.geo.example", "A", ecs=f"{sample}/{prefix}")
            assert region_of(answer_addresses(other)) == region, (network, scope, sample)


def _samples(network: Any, count: int = 6) -> list[Any]:
    size = network.num_addresses
    return [network.network_address + (size * i) // count for i in range(count)] + [network.broadcast_address]


def test_scope_is_wider_than_the_database_network_when_the_answer_allows(geo: RunningServer) -> None:
    # In the `prefs` pool an American client and an unlocated one both get near-everyone
    # (the nearest region, and the first in file order), so Milton's /29 answer holds for
    # a much wider prefix: as wide as reaches no British or European network.
    response = geo.query("prefs.geo.example", "A", ecs="216.160.83.56/29")
    assert answer_addresses(response) == {"192.0.2.100"}
    scope = ecs_scope(response)
    assert scope < 29
    for sample in _samples(ipaddress.ip_network(f"216.160.83.56/{scope}", strict=False)):
        assert answer_addresses(geo.query("prefs.geo.example", "A", ecs=f"{sample}/32")) == {"192.0.2.100"}
    # Linköping's /28 has an empty (unlocated, so file-order) neighbour: no wider than the database network.
    assert ecs_scope(geo.query("www.geo.example", "A", ecs="89.160.20.112/32")) == 28


def test_scope_never_exceeds_the_source_prefix(geo: RunningServer) -> None:
    response = geo.query("www.geo.example", "A", ecs="81.2.0.0/12")
    assert ecs_scope(response) <= 12


def test_ecs_with_zero_source_uses_the_packet_source(geo: RunningServer) -> None:
    response = geo.query("www.geo.example", "A", ecs="0.0.0.0/0")
    assert region_of(answer_addresses(response)) == "virginia"  # 127.0.0.1: no location, file order
    assert ecs_scope(response) == 0


def test_no_ecs_from_loopback_is_file_order(geo: RunningServer) -> None:
    response = geo.query("www.geo.example", "A")
    assert region_of(answer_addresses(response)) == "virginia"
    assert not [o for o in response.options if isinstance(o, dns.edns.ECSOption)]


def test_unlocated_public_address_is_file_order_with_a_true_scope(geo: RunningServer) -> None:
    response = geo.query("www.geo.example", "A", ecs="175.16.199.0/24")  # in the database without a location? no: absent
    assert region_of(answer_addresses(response)) in REGIONS
    assert ecs_scope(response) > 0  # depends on the address: never 0


def test_private_address_is_file_order(geo: RunningServer) -> None:
    response = geo.query("www.geo.example", "A", ecs="192.168.7.0/24")
    assert region_of(answer_addresses(response)) == "virginia"
    assert 0 < ecs_scope(response) <= 24


def test_static_answer_has_scope_zero(geo: RunningServer) -> None:
    response = geo.query("static.geo.example", "A", ecs="81.2.69.160/27")
    assert answer_addresses(response) == {"192.0.2.200"}
    assert ecs_scope(response) == 0


def test_networks_most_specific_wins(geo: RunningServer) -> None:
    inside = geo.query("www.geo.example", "A", ecs="203.0.113.200/32")
    assert region_of(answer_addresses(inside)) == "virginia"
    outside = geo.query("www.geo.example", "A", ecs="203.0.113.5/32")
    assert region_of(answer_addresses(outside)) == "frankfurt"
    assert ecs_scope(outside) == 25  # the /24 minus its more specific /25
    assert ecs_scope(inside) == 25


def test_networks_preference_order_then_next_for_the_family(geo: RunningServer) -> None:
    # [frankfurt, sydney]: frankfurt has no IPv6, so AAAA comes from sydney.
    response = geo.query("www.geo.example", "AAAA", ecs="203.0.113.5/32")
    assert region_of(answer_addresses(response, "AAAA")) == "sydney"


def test_networks_beat_geoip(geo: RunningServer) -> None:
    response = geo.query("www.geo.example", "A", ecs="100.64.3.0/24")
    assert region_of(answer_addresses(response)) == "tokyo"
    assert ecs_scope(response) == 10


def test_networks_rule_for_a_missing_region_is_passed_over(geo: RunningServer) -> None:
    response = geo.query("www.geo.example", "A", ecs="198.18.1.0/24")
    assert region_of(answer_addresses(response)) == "virginia"  # no location: file order


def test_countries_beat_continents_beat_distance(geo: RunningServer) -> None:
    gb = geo.query("prefs.geo.example", "A", ecs="81.2.69.160/27")
    assert answer_addresses(gb) == {"192.0.2.101"}  # for-gb, in Sydney
    se = geo.query("prefs.geo.example", "A", ecs="89.160.20.112/28")
    assert answer_addresses(se) == {"192.0.2.102"}  # for-europe, in Tokyo
    us = geo.query("prefs.geo.example", "A", ecs="216.160.83.56/29")
    assert answer_addresses(us) == {"192.0.2.100"}  # nearest located region
    assert gb.answer[0].ttl == 45


def test_aaaa_skips_regions_without_ipv6(geo: RunningServer) -> None:
    # Linköping is nearest Frankfurt, which has IPv4 only: AAAA comes from Dublin.
    a = geo.query("www.geo.example", "A", ecs="89.160.20.112/28")
    aaaa = geo.query("www.geo.example", "AAAA", ecs="89.160.20.112/28")
    assert region_of(answer_addresses(a)) == "frankfurt"
    assert answer_addresses(aaaa, "AAAA") == {"2001:db8:3::10"}
    assert not answer_addresses(aaaa, "A")


def test_pool_without_ipv6_is_nodata(geo: RunningServer) -> None:
    response = geo.query("v4.geo.example", "AAAA", ecs="81.2.69.160/27")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer
    assert response.authority and response.authority[0].rdtype == dns.rdatatype.SOA
    assert ecs_scope(response) == 0


def test_geo_ttls(geo: RunningServer) -> None:
    assert geo.query("www.geo.example", "A").answer[0].ttl == 30  # default
    assert geo.query("v4.geo.example", "A").answer[0].ttl == 60


def test_max_answers_limits_and_rotates(geo: RunningServer) -> None:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(100):
        addresses = answer_addresses(geo.query("many.geo.example", "A"))
        assert len(addresses) == 2
        seen.update(addresses)
    assert set(seen) == {f"192.0.2.9{i}" for i in range(5)}


def test_weights_pick_heavier_endpoints_more_often(geo: RunningServer) -> None:
    picks: collections.Counter[str] = collections.Counter()
    for _ in range(400):
        (address,) = answer_addresses(geo.query("weighted-one.geo.example", "A"))
        picks[address] += 1
    assert picks["192.0.2.82"] == 0  # weight 0: standby
    share = picks["192.0.2.81"] / 400
    assert 0.6 < share < 0.9  # expected 0.75


def test_weighted_order_puts_heavier_endpoints_first_more_often(geo: RunningServer) -> None:
    first: collections.Counter[str] = collections.Counter()
    for _ in range(400):
        response = geo.query("weighted-all.geo.example", "A")
        assert {r.to_text() for r in response.answer[0]} == {"192.0.2.80", "192.0.2.81"}
        first[response.answer[0][0].to_text()] += 1
    assert 0.6 < first["192.0.2.81"] / 400 < 0.9


@pytest.mark.parametrize(
    ("option", "why"),
    [
        (b"\x00\x03\x18\x00\x51\x02\x45", "unknown family"),
        (b"\x00\x01\x21\x00\x51\x02\x45\x01\x00", "source longer than 32"),
        (b"\x00\x01\x18\x00\x51\x02\x45\x01", "address longer than the source prefix needs"),
        (b"\x00\x01\x18\x00\x51\x02", "address shorter than the source prefix needs"),
        (b"\x00\x01\x17\x00\x51\x02\x45", "bits set beyond the source prefix"),
        (b"\x00\x01", "option too short"),
    ],
)
def test_malformed_ecs_is_formerr(geo: RunningServer, option: bytes, why: str) -> None:
    message = dns.message.make_query("www.geo.example", "A", use_edns=0, options=[dns.edns.GenericOption(8, option)])
    response = geo.send(message)
    assert response.rcode() == dns.rcode.FORMERR, why


def test_country_database_uses_centroids() -> None:
    centroids = {}
    with open(ROOT / "geolb" / "data" / "country-centroids.csv") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            centroids[row["country"]] = (float(row["latitude"]), float(row["longitude"]))
    server = start_server(ZONES, geoip=DATA / "GeoLite2-Country-Test.mmdb")
    try:
        for client, country in (("89.160.20.112/28", "SE"), ("216.160.83.56/29", "US"), ("2001:218::/32", "JP")):
            response = server.query("www.geo.example", "A", ecs=client)
            assert region_of(answer_addresses(response)) == nearest(centroids[country], 4), client
    finally:
        assert server.stop() == 0


def test_resolve_prints_answer_and_reasoning() -> None:
    result = subprocess.run(
        geolb_command("resolve", "www.geo.example", "--client", "81.2.69.160/27", "--zones", str(ZONES), "--geoip", str(CITY_DB)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "www.geo.example.\t30\tIN\tA\t198.51.100.10" in out
    assert "location: GB, EU, 51.5142, -0.0931" in out
    assert "1. dublin (" in out and "km)" in out
    assert "answered from dublin" in out
    aaaa = subprocess.run(
        geolb_command(
            "resolve", "www.geo.example", "--type", "AAAA", "--client", "89.160.20.112", "--zones", str(ZONES), "--geoip", str(CITY_DB)
        ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "skipped frankfurt: no IPv6 endpoint" in aaaa.stdout
    assert "answered from dublin" in aaaa.stdout


def test_explain_api_returns_the_reasoning(geo: RunningServer) -> None:
    url = f"{geo.http_url}/v1/explain?name=www.geo.example&type=AAAA&client=89.160.20.112/28"
    with urllib.request.urlopen(url, timeout=5) as reply:
        report = json.load(reply)
    assert report["rcode"] == "NOERROR"
    assert report["client"] == {"address": "89.160.20.112", "prefix": 28}
    assert [r["data"] for r in report["answer"]] == ["2001:db8:3::10"]
    geo_part = report["geo"]
    assert geo_part["rule"] == "geoip"
    assert geo_part["location"]["country"] == "SE"
    assert geo_part["ranking"][0]["region"] == "frankfurt"
    assert geo_part["ranking"][0]["distance_km"] > 0
    assert {"region": "frankfurt", "reason": "no IPv6 endpoint"} in geo_part["skipped"]
    assert geo_part["region"] == "dublin"
    assert 0 < report["ecs_scope"] <= 28


def test_explain_api_errors(geo: RunningServer) -> None:
    for query, status in (
        ("name=www.geo.example", 400),
        ("name=www.geo.example&client=nope", 400),
        ("name=www.other.test&client=1.2.3.4", 404),
    ):
        try:
            urllib.request.urlopen(f"{geo.http_url}/v1/explain?{query}", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == status
            assert "error" in json.load(exc)
        else:
            raise AssertionError(f"{query} did not fail")
