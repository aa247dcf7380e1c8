"""The precomputed region map against the straightforward ranking, and its scopes against brute force."""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import maxminddb
import pytest

from geolb import model
from geolb.config.zonefile import read_zone_file
from geolb.errors import Where
from geolb.geo.choose import GeoAnswers
from geolb.geo.locate import GeoIPLocator, NoLocator, bundled_database
from geolb.geo.mmdbflat import SPECIAL_NETWORKS
from geolb.geo.rank import choose, rank_regions
from geolb.geo.regionmap import AnswerMap, RegionMap, answer_table, build_region_map, prefix_within
from geolb.geo.store import MapStore
from geolb.health.state import ALL_UP, HealthView
from tests.geomaps import region_maps

DATA = Path(__file__).resolve().parent.parent / "data"
HERE = Where("test", 1)
CHECK = model.HealthCheck("none", 80, "/", None, (200,), None, 10.0, 2.0, 3, 2, True)
DATABASES = ["GeoIP2-City-Test.mmdb", "GeoLite2-Country-Test.mmdb"]


def region(name: str, location: tuple[float, float] | None, *addresses: str, countries: str = "", continents: str = "") -> model.Region:
    endpoints = tuple(model.Endpoint(ipaddress.ip_address(a), 1, CHECK, HERE) for a in addresses)
    return model.Region(name, location, frozenset(countries.split()), frozenset(continents.split()), endpoints, HERE)


def rule(network: str, *regions: str) -> model.NetworkRule:
    return model.NetworkRule(ipaddress.ip_network(network), regions, HERE)


# A pool that exercises every rule: an unlocated region first in file order, countries, continents,
# nested `networks` rules in both families, one inside an alias of the IPv4 tree.
TRICKY = model.Pool(
    "tricky",
    "geo.example.",
    (
        region("unplaced", None, "192.0.2.4", "2001:db8::4"),
        region("east", (39.0, -77.5), "192.0.2.1", "2001:db8::1"),
        region("gb", (-33.9, 151.2), "192.0.2.5", countries="GB"),
        region("europe", (35.7, 139.7), "192.0.2.3", "2001:db8::3", continents="EU"),
        region("west", (45.6, -121.2), "192.0.2.2"),
    ),
    (
        rule("81.2.0.0/16", "west"),
        rule("81.2.69.128/25", "east", "unplaced"),
        rule("10.0.0.0/8", "europe"),
        rule("2a02:d4c0::/29", "gb", "west"),
    ),
    HERE,
)


# Several regions in one country or continent tier: by distance, the unlocated after the located (SPEC §3 rule 2b).
TIERS = model.Pool(
    "tiers",
    "geo.example.",
    (
        region("gb-unplaced", None, "192.0.2.10", countries="GB"),
        region("gb-far", (-33.9, 151.2), "192.0.2.11", countries="GB"),
        region("gb-near", (51.5, -0.1), "192.0.2.12", countries="GB"),
        region("eu-unplaced", None, "192.0.2.13", continents="EU"),
        region("eu-far", (35.7, 139.7), "192.0.2.14", continents="EU"),
        region("eu-near", (48.9, 2.3), "192.0.2.15", continents="EU"),
        region("east", (39.0, -77.5), "192.0.2.1"),
    ),
    (),
    HERE,
)


def zone_pools() -> list[model.Pool]:
    zone = read_zone_file(str(DATA / "geo-zones" / "geo.example.yaml")).zone
    assert zone is not None
    return [zone.pools["web"], zone.pools["prefs"], TRICKY, TIERS]


def test_within_a_tier_the_nearest_first_and_the_unlocated_last() -> None:
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    london = ipaddress.ip_address("81.2.69.160")  # GB, EU in the test database
    expected = ["gb-near", "gb-far", "gb-unplaced", "eu-near", "eu-far", "eu-unplaced", "east"]
    assert reference(TIERS, locator, london) == expected
    assert mapped(maps_for([TIERS], locator)["tiers"], london) == expected


def maps_for(pools: list[model.Pool], locator: GeoIPLocator | NoLocator) -> dict[str, RegionMap]:
    zones = model.ZoneSet(zones={}, pools={pool.name: pool for pool in pools})
    return region_maps(zones, locator)


def reference(pool: model.Pool, locator: GeoIPLocator | NoLocator, address: model.IPAddress) -> list[str]:
    return [ranked.region.name for ranked in rank_regions(pool, address, locator.locate(address)).regions]


def mapped(region_map: RegionMap, address: model.IPAddress) -> list[str]:
    ranking, _scope = region_map.ranking_of(address)
    return [region_map.regions[i] for i in ranking]


def probes(network: model.IPNetwork, rng: random.Random) -> Iterator[model.IPAddress]:
    first, last = int(network.network_address), int(network.broadcast_address)
    kind = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
    for value in {first, last, rng.randint(first, last)}:
        yield kind(value)


def every_network(path: Path) -> list[model.IPNetwork]:
    with maxminddb.open_database(str(path)) as reader:
        return [network for network, _ in reader]


EXTRA = [
    "10.1.2.3", "100.64.1.1", "127.0.0.1", "192.168.7.7", "203.0.113.200", "0.0.0.1", "255.255.255.255", "1.0.0.0",
    "::1", "::", "::ffff:81.2.69.160", "::81.2.69.160", "2002:5102:45a0::1", "2001:0:5102:45a0::", "2001:db8::7",
    "fe80::1", "ff02::1", "2a02:d4c0::1", "2a02:d4c7:ffff::1", "81.2.69.129", "81.2.1.1",
]  # fmt: skip


@pytest.mark.parametrize("database", DATABASES)
def test_map_agrees_with_the_straightforward_ranking_for_every_network(database: str) -> None:
    locator = GeoIPLocator(str(DATA / database))
    pools = zone_pools()
    maps = maps_for(pools, locator)
    rng = random.Random(7)
    addresses = [a for network in every_network(DATA / database) for a in probes(network, rng)]
    addresses += [ipaddress.ip_address(text) for text in EXTRA]
    addresses += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(2000)]
    addresses += [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(500)]
    assert {a.version for a in addresses} == {4, 6}
    for pool in pools:
        for address in addresses:
            assert mapped(maps[pool.name], address) == reference(pool, locator, address), (database, pool.name, address)


def test_map_agrees_with_the_straightforward_ranking_on_the_bundled_database() -> None:
    path = bundled_database()
    if path is None:
        pytest.skip("maxminddb-geolite2 is not installed")
    locator = GeoIPLocator(path)
    pools = zone_pools()
    maps = maps_for(pools, locator)
    rng = random.Random(11)
    addresses: list[model.IPAddress] = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(3000)]
    addresses += [ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124)) for _ in range(1000)]  # 2000::/3, where v6 lives
    for pool in pools:
        for address in addresses:
            assert mapped(maps[pool.name], address) == reference(pool, locator, address), (pool.name, address)


def test_an_unlocated_client_gets_every_region_in_file_order() -> None:
    """SPEC §3 rule 2c: file order, unlocated regions keeping their place."""
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    region_map = maps_for([TRICKY], locator)["tricky"]
    for text in ("192.168.1.1", "1.0.0.0", "fc00::1"):
        assert mapped(region_map, ipaddress.ip_address(text)) == ["unplaced", "east", "gb", "europe", "west"]
    assert mapped(region_map, ipaddress.ip_address("10.9.9.9")) == ["europe", "unplaced", "east", "gb", "west"]
    assert mapped(region_map, ipaddress.ip_address("81.2.69.130"))[:2] == ["east", "unplaced"]  # most specific rule wins
    assert mapped(region_map, ipaddress.ip_address("81.2.69.1"))[0] == "west"


def test_no_database_answers_file_order_around_the_rules() -> None:
    region_map = maps_for([TRICKY], NoLocator())["tricky"]
    assert mapped(region_map, ipaddress.ip_address("8.8.8.8"))[0] == "unplaced"
    answers = GeoAnswers({"tricky": region_map}, ALL_UP)
    choice = answers.choose(TRICKY, 4, ipaddress.ip_address("8.8.8.8"))
    assert choice.region is not None and choice.region.name == "unplaced"
    assert choice.scope == 7  # 10.0.0.0/8 is pinned elsewhere: 8.0.0.0/7 is the widest block that answers alike
    assert answers.choose(TRICKY, 4, ipaddress.ip_address("10.1.1.1")).scope == 8


def answering(pool: model.Pool, locator: GeoIPLocator, address: model.IPAddress, family: int, health: HealthView) -> str | None:
    location = locator.locate(address)
    decision = choose(pool, address, location, rank_regions(pool, address, location), family, health)
    return None if decision.region is None else decision.region.name


HEALTH_STATES = {
    "all up": lambda pool: ALL_UP,
    "first located region down": lambda pool: HealthView(frozenset(e.key for e in pool.regions[1].endpoints)),
    "everything down": lambda pool: HealthView(frozenset(e.key for r in pool.regions for e in r.endpoints)),
}


def samples_inside(scope: model.IPNetwork, networks: list[model.IPNetwork], pool: model.Pool) -> list[model.IPAddress]:
    """One address of every database network, rule and special range in `scope`, and one it has no data for."""
    kind = ipaddress.IPv4Address if scope.version == 4 else ipaddress.IPv6Address
    inside = sorted((n for n in networks if n.version == scope.version and n.overlaps(scope)), key=lambda n: int(n.network_address))
    others = [r.network for r in pool.networks] + list(SPECIAL_NETWORKS)
    inside_others = [n for n in others if n.version == scope.version and n.overlaps(scope)]
    out = [kind(max(int(n.network_address), int(scope.network_address))) for n in inside + inside_others]
    cursor = int(scope.network_address)
    for network in inside:
        if int(network.network_address) > cursor:
            break
        cursor = max(cursor, int(network.broadcast_address) + 1)
    if cursor <= int(scope.broadcast_address):
        out.append(kind(cursor))
    return out


@pytest.mark.parametrize("state", sorted(HEALTH_STATES))
@pytest.mark.parametrize("database", DATABASES)
def test_every_scope_is_true_by_brute_force(database: str, state: str) -> None:
    """Inside the scope of each answer, every database network, rule, special range and gap answers alike."""
    locator = GeoIPLocator(str(DATA / database))
    pools = zone_pools()
    maps = maps_for(pools, locator)
    networks = every_network(DATA / database)
    rng = random.Random(3)
    clients = [a for network in networks for a in probes(network, rng)] + [ipaddress.ip_address(t) for t in EXTRA]
    widened = 0
    for pool in pools:
        health = HEALTH_STATES[state](pool)
        answers = GeoAnswers({pool.name: maps[pool.name]}, health)
        for family in (4, 6):
            for client in clients:
                choice = answers.choose(pool, family, client)
                if choice.region is None:
                    continue
                assert choice.region.name == answering(pool, locator, client, family, health), (pool.name, family, client)
                scope = ipaddress.ip_network((client, choice.scope), strict=False)
                widened += choice.scope < locator.locate(client).network.prefixlen
                for sample in samples_inside(scope, networks, pool):
                    assert answering(pool, locator, sample, family, health) == choice.region.name, (pool.name, client, scope, sample)
    assert widened > 0


@pytest.mark.parametrize(
    ("address", "first", "last", "width", "expected"),
    [
        (9, 8, 15, 4, 1),
        (9, 9, 9, 4, 4),
        (0, 0, 15, 4, 0),
        (5, 0, 7, 4, 1),
        (5, 1, 15, 4, 2),
        (0x51024500, 0x51020000, 0x5102FFFF, 32, 16),
    ],
)
def test_prefix_within(address: int, first: int, last: int, width: int, expected: int) -> None:
    assert prefix_within(address, first, last, width) == expected
    block = ipaddress.ip_network((address, expected), strict=False) if width == 32 else None
    if block is not None:
        assert first <= int(block.network_address) and int(block.broadcast_address) <= last


def test_a_chunked_build_keeping_the_start_of_each_ranking_answers_as_the_plain_build() -> None:
    """Big pools keep PREFIX regions of each ranking and rank a chunk of locations at a time: for every set of
    regions that may answer, every address gets the region (and scope) the whole-ranking, one-chunk build gives."""
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    flat = locator.flatten()
    rng = random.Random(5)
    clients = [a for network in every_network(DATA / "GeoIP2-City-Test.mmdb") for a in probes(network, rng)]
    clients += [ipaddress.ip_address(text) for text in EXTRA]
    for pool in zone_pools():
        plain = build_region_map(pool, flat, prefix=1000, chunk_cells=10**9)
        chunked = build_region_map(pool, flat, prefix=2, chunk_cells=7)
        assert plain.rankings.shape[1] == len(pool.regions) and chunked.rankings.shape[1] == 2
        for address in clients:
            assert chunked.ranking_of(address)[0] == plain.ranking_of(address)[0], (pool.name, address)
        regions = range(len(pool.regions))
        for size in range(1, len(pool.regions) + 1):
            for usable in itertools.combinations(regions, size):
                alive = frozenset(usable)
                expected = AnswerMap(plain, answer_table(plain, alive))
                got = AnswerMap(chunked, answer_table(chunked, alive))
                for address in clients:
                    assert got.lookup(int(address), address.version) == expected.lookup(int(address), address.version), (
                        pool.name,
                        usable,
                        address,
                    )


def test_a_map_of_an_older_layout_in_the_cache_is_replaced(tmp_path: Path) -> None:
    zones = model.ZoneSet(zones={}, pools={"tricky": TRICKY})
    built = MapStore(str(tmp_path)).maps_for(zones, NoLocator())["tricky"]
    meta = MapStore(str(tmp_path)).folder(built.key) / "meta.json"
    meta.write_text(meta.read_text().replace('"format": ', '"format": 1'))  # an older layout, same key
    again = MapStore(str(tmp_path)).maps_for(zones, NoLocator())["tricky"]
    assert again.ranking_of(ipaddress.ip_address("10.1.1.1")) == built.ranking_of(ipaddress.ip_address("10.1.1.1"))
