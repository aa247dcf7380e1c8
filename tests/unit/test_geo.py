"""Pure geo functions: ranking, scope arithmetic, weighted order, and scope widening vs brute force."""

from __future__ import annotations

import collections
import ipaddress
import random
from pathlib import Path

import maxminddb
import pytest

from geolb import model
from geolb.config.zonefile import read_zone_file
from geolb.errors import Where
from geolb.geo.decide import GeoDecider
from geolb.geo.locate import UNKNOWN, GeoIPLocator, special_network
from geolb.geo.rank import Location, answering_region, great_circle_km, rank_regions, scope_excluding, weighted_order
from geolb.health.state import ALL_UP, HealthView

DATA = Path(__file__).parent.parent / "data"
HERE = Where("test", 1)
CHECK = model.HealthCheck("none", 80, "/", None, (200,), None, 10.0, 2.0, 3, 2, True)


def endpoint(address: str, weight: int = 1) -> model.Endpoint:
    return model.Endpoint(ipaddress.ip_address(address), weight, CHECK, HERE)


def region(name: str, location: tuple[float, float] | None, *addresses: str, countries: str = "", continents: str = "") -> model.Region:
    return model.Region(
        name, location, frozenset(countries.split()), frozenset(continents.split()), tuple(endpoint(a) for a in addresses), HERE
    )


POOL = model.Pool(
    "web",
    "example.com.",
    (
        region("east", (39.0, -77.5), "192.0.2.1", "2001:db8::1"),
        region("west", (45.6, -121.2), "192.0.2.2"),
        region("europe", (53.3, -6.3), "192.0.2.3", "2001:db8::3", continents="EU"),
        region("unplaced", None, "192.0.2.4"),
    ),
    (model.NetworkRule(ipaddress.ip_network("10.0.0.0/8"), ("west",), HERE),),
    HERE,
)


def at(lat: float, lon: float, country: str | None = None, continent: str | None = None, net: str = "81.2.69.0/24") -> Location:
    return Location(ipaddress.ip_network(net), country, continent, lat, lon, source="test")


def test_great_circle() -> None:
    assert great_circle_km((0, 0), (0, 0)) == 0
    assert great_circle_km((51.5, -0.13), (40.71, -74.0)) == pytest.approx(5570, rel=0.01)  # London-New York


def test_ranking_by_continent_then_distance_then_unplaced() -> None:
    ranking = rank_regions(POOL, ipaddress.ip_address("81.2.69.1"), at(35.0, -100.0, "GB", "EU"))
    assert [r.region.name for r in ranking.regions] == ["europe", "east", "west", "unplaced"]
    assert ranking.rule == "geoip"
    assert ranking.scope == 24


def test_ranking_by_distance() -> None:
    ranking = rank_regions(POOL, ipaddress.ip_address("81.2.69.1"), at(40.0, -120.0, "US", "NA"))
    assert [r.region.name for r in ranking.regions] == ["west", "east", "europe", "unplaced"]


def test_ranking_without_location_is_file_order() -> None:
    ranking = rank_regions(POOL, ipaddress.ip_address("192.168.1.1"), Location(ipaddress.ip_network("192.168.0.0/16")))
    assert ranking.rule == "file order"
    assert [r.region.name for r in ranking.regions] == ["east", "west", "europe", "unplaced"]


def test_networks_rule_first_then_location() -> None:
    ranking = rank_regions(POOL, ipaddress.ip_address("10.1.2.3"), Location(ipaddress.ip_network("10.0.0.0/8")))
    assert ranking.rule == "networks"
    assert ranking.regions[0].region.name == "west"
    assert ranking.scope == 8


@pytest.mark.parametrize(
    ("client", "base", "networks", "expected"),
    [
        ("10.1.7.1", 16, ["10.1.5.0/24"], 23),  # shares 22 bits with 10.1.5.0
        ("10.1.7.1", 16, ["10.2.0.0/16"], 16),  # outside the base prefix: no effect
        ("10.1.7.1", 8, ["10.1.7.0/24"], 8),  # holds the client: not excluded
        ("10.1.7.1", 0, ["10.1.7.128/25"], 25),
        ("2001:db8::1", 32, ["2001:db8:0:1::/64"], 64),
        ("10.1.7.1", 16, ["2001:db8::/32"], 16),  # other family
    ],
)
def test_scope_excluding(client: str, base: int, networks: list[str], expected: int) -> None:
    nets = [ipaddress.ip_network(n) for n in networks]
    assert scope_excluding(ipaddress.ip_address(client), base, nets) == expected


def test_weighted_order_follows_weights() -> None:
    rng = random.Random(1)
    candidates = [endpoint("192.0.2.1", 1), endpoint("192.0.2.2", 3), endpoint("192.0.2.3", 0)]
    firsts = collections.Counter(str(weighted_order(candidates, 1, rng)[0].address) for _ in range(4000))
    assert firsts["192.0.2.3"] == 0
    assert firsts["192.0.2.2"] / 4000 == pytest.approx(0.75, abs=0.04)
    assert len(weighted_order(candidates, None, rng)) == 2  # standby left out
    standby = [endpoint("192.0.2.5", 0), endpoint("192.0.2.6", 0)]
    assert len(weighted_order(standby, None, rng)) == 2  # all standby: all answer


def test_answering_region_skips_down_and_fails_open() -> None:
    europe = POOL.regions[2]
    down_europe = HealthView(frozenset(e.key for e in europe.endpoints))
    london = at(51.5, -0.1, "GB", "EU")
    assert answering_region(POOL, london, 6, ALL_UP) == "europe"
    assert answering_region(POOL, london, 6, down_europe) == "east"
    everything = HealthView(frozenset(e.key for r in POOL.regions for e in r.endpoints))
    assert answering_region(POOL, london, 6, everything) == "europe"  # fail open: first in order


def test_special_networks() -> None:
    assert special_network(ipaddress.ip_address("10.2.3.4")) == ipaddress.ip_network("10.0.0.0/8")
    assert special_network(ipaddress.ip_address("::1")) is not None
    assert special_network(ipaddress.ip_address("81.2.69.1")) is None


def test_widened_scope_is_true_against_every_database_network() -> None:
    """For each test client, every database network inside the widened scope gets the same region."""
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    zone = read_zone_file(str(DATA / "geo-zones" / "geo.example.yaml")).zone
    assert zone is not None
    reader = maxminddb.open_database(str(DATA / "GeoIP2-City-Test.mmdb"))
    networks = [(net, locator.locate(net.network_address)) for net, _ in reader]
    clients = [
        ipaddress.ip_address(a) for a in ("81.2.69.160", "216.160.83.56", "89.160.20.112", "2001:218::1", "2a02:d4c0::1", "175.16.199.1")
    ]
    widened_somewhere = False
    for pool in (zone.pools["web"], zone.pools["prefs"]):
        for family in (4, 6):
            decider = GeoDecider(locator, ALL_UP)
            for client in clients:
                decision = decider.decide(pool, family, client)
                if decision.region is None:
                    continue
                scope = decision.ranking.scope
                widened_somewhere |= scope < locator.locate(client).network.prefixlen
                covered = ipaddress.ip_network((client, scope), strict=False)
                for net, location in networks:
                    if net.version == covered.version and net.overlaps(covered) and special_network(net.network_address) is None:
                        got = answering_region(pool, location, family, ALL_UP)
                        assert got == decision.region.name, (pool.name, family, client, scope, net)
    assert widened_somewhere


def test_unknown_space_inside_a_scope_answers_like_file_order() -> None:
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    zone = read_zone_file(str(DATA / "geo-zones" / "geo.example.yaml")).zone
    assert zone is not None
    pool = zone.pools["prefs"]
    decision = GeoDecider(locator, ALL_UP).decide(pool, 4, ipaddress.ip_address("216.160.83.56"))
    assert decision.region is not None
    covered = ipaddress.ip_network((decision.client, decision.ranking.scope), strict=False)
    # Every address of the prefix is either in a database network (checked above) or unknown:
    assert answering_region(pool, UNKNOWN, 4, ALL_UP) == decision.region.name
    assert covered.prefixlen < 29
