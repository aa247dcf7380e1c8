"""Pure geo functions: ranking, scope arithmetic, weighted order, skipping and failing open."""

from __future__ import annotations

import collections
import ipaddress
import random
from pathlib import Path

import pytest

from geolb import model
from geolb.errors import Where
from geolb.geo.choose import GeoAnswers
from geolb.geo.locate import NoLocator, special_network
from geolb.geo.rank import Location, great_circle_km, rank_regions, scope_excluding
from geolb.geo.select import every_order, weighted_indices
from geolb.health.state import ALL_UP, HealthView
from tests.geomaps import region_maps

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
    # SPEC §3 rule 2c: every region keeps its file place, located or not.
    first_unplaced = model.Pool("p", "example.com.", (POOL.regions[3], *POOL.regions[:3]), (), HERE)
    ranking = rank_regions(first_unplaced, ipaddress.ip_address("192.168.1.1"), Location(ipaddress.ip_network("192.168.0.0/16")))
    assert [r.region.name for r in ranking.regions] == ["unplaced", "east", "west", "europe"]
    # Under rule 2b a located client still sorts unlocated regions last.
    ranking = rank_regions(first_unplaced, ipaddress.ip_address("81.2.69.1"), at(40.0, -120.0, "US", "NA"))
    assert [r.region.name for r in ranking.regions][-1] == "unplaced"


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


def weighted_order(endpoints: list[model.Endpoint], limit: int | None, rng: random.Random) -> list[model.Endpoint]:
    return [endpoints[i] for i in weighted_indices([e.weight for e in endpoints], limit, rng)]


def test_weighted_order_follows_weights() -> None:
    rng = random.Random(1)
    candidates = [endpoint("192.0.2.1", 1), endpoint("192.0.2.2", 3), endpoint("192.0.2.3", 0)]
    firsts = collections.Counter(str(weighted_order(candidates, 1, rng)[0].address) for _ in range(4000))
    assert firsts["192.0.2.3"] == 0
    assert firsts["192.0.2.2"] / 4000 == pytest.approx(0.75, abs=0.04)
    assert len(weighted_order(candidates, None, rng)) == 2  # standby left out
    standby = [endpoint("192.0.2.5", 0), endpoint("192.0.2.6", 0)]
    assert len(weighted_order(standby, None, rng)) == 2  # all standby: all answer


def test_every_order_only_when_orders_are_equally_likely() -> None:
    assert every_order([1, 1, 1], None) is not None and len(every_order([1, 1, 1], None) or []) == 6
    assert every_order([1, 1, 0], 1) == [(0,), (1,)]  # standby left out
    assert every_order([1, 3], None) is None  # unequal weights: ordered per query
    assert every_order([1] * 6, None) is None  # 720 orders: too many to keep


def test_choice_skips_regions_down_and_fails_open() -> None:
    """SPEC §3 rules 3-4, through the precomputed maps (no database: file order, europe is third)."""
    pool = model.Pool("web", "example.com.", (POOL.regions[2], POOL.regions[0], POOL.regions[1]), (), HERE)
    maps = region_maps(model.ZoneSet(zones={}, pools={"web": pool}), NoLocator())
    client = ipaddress.ip_address("81.2.69.1")
    europe, east = pool.regions[0], pool.regions[1]

    def region_for(health: HealthView, family: int) -> str | None:
        choice = GeoAnswers(maps, health).choose(pool, family, client)
        return None if choice.region is None else choice.region.name

    assert region_for(ALL_UP, 6) == "europe"
    down_europe = HealthView(frozenset(e.key for e in europe.endpoints))
    assert region_for(down_europe, 6) == "east"
    assert region_for(down_europe, 4) == "east"
    everything = HealthView(frozenset(e.key for r in pool.regions for e in r.endpoints))
    choice = GeoAnswers(maps, everything).choose(pool, 6, client)
    assert choice.region is not None and choice.region.name == "europe" and choice.failed_open  # first in order
    assert {str(e.address) for e in choice.candidates} == {str(e.address) for e in europe.endpoints if e.address.version == 6}
    forced_up = HealthView(frozenset(e.key for e in europe.endpoints), {("web", "europe", europe.endpoints[0].address): True})
    assert region_for(forced_up, 4) == "europe"
    assert east.name == "east"


def test_special_networks() -> None:
    assert special_network(ipaddress.ip_address("10.2.3.4")) == ipaddress.ip_network("10.0.0.0/8")
    assert special_network(ipaddress.ip_address("::1")) is not None
    assert special_network(ipaddress.ip_address("81.2.69.1")) is None
