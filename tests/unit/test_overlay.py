"""Latency evidence over the region maps: composition, tiers, margin, usable sets, and scopes true by brute force."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from geolb import model
from geolb.errors import Where
from geolb.geo.choose import AnswerMemo, GeoAnswers
from geolb.geo.locate import GeoIPLocator
from geolb.geo.mmdbflat import ALIAS
from geolb.geo.regionmap import RegionMap, order_keys
from geolb.health.state import ALL_UP, HealthView
from geolb.steer.evidence import Figures, NetworkTable, PoolEvidence, Vantage
from geolb.steer.overlay import compose, describe, geo_rankings, range_values
from tests.geomaps import region_maps

DATA = Path(__file__).resolve().parent.parent / "data"
HERE = Where("test", 1)
CHECK = model.HealthCheck("none", 80, "/", None, (200,), None, 10.0, 2.0, 3, 2, True)
LATENCY = model.Latency()


def region(name: str, location: tuple[float, float] | None, *addresses: str, countries: str = "", continents: str = "") -> model.Region:
    endpoints = tuple(model.Endpoint(ipaddress.ip_address(a), 1, CHECK, HERE) for a in addresses)
    return model.Region(name, location, frozenset(countries.split()), frozenset(continents.split()), endpoints, HERE)


POOL = model.Pool(
    "steered",
    "geo.example.",
    (
        region("us-east", (39.0, -77.5), "192.0.2.1", "2001:db8::1"),
        region("eu-west", (53.3, -6.3), "192.0.2.2", "2001:db8::2", continents="EU"),
        region("gb", (51.5, -0.1), "192.0.2.3", countries="GB"),
        region("ap", (35.7, 139.7), "192.0.2.4", "2001:db8::4"),
        region("unplaced", None, "192.0.2.5", "2001:db8::5"),
    ),
    (
        model.NetworkRule(ipaddress.ip_network("81.2.69.128/26"), ("ap",), HERE),
        model.NetworkRule(ipaddress.ip_network("2a02:d4c0::/32"), ("us-east",), HERE),
    ),
    HERE,
    steering="latency",
)
NAMES = tuple(r.name for r in POOL.regions)


# --- compose: the ordering rule on one row -----------------------------------------------


def one(tiers: list[int], distances: list[float], rtt: list[float | None], usable: list[int], leader: int = -1) -> tuple[int, bool]:
    allowed = np.zeros(len(tiers), dtype=bool)
    allowed[usable] = True
    answer, decided = compose(
        np.array([tiers], dtype=np.int8),
        np.array([distances], dtype=np.float64),
        np.array([[np.nan if r is None else r for r in rtt]]),
        np.array([leader]),
        allowed,
        LATENCY,
    )
    return int(answer[0]), bool(decided[0])


@pytest.mark.parametrize(
    ("tiers", "distances", "rtt", "usable", "leader", "expected"),
    [
        # Covered regions by RTT first: the fastest beats the nearest by more than 10 % and 5 ms.
        ([2, 2, 2], [100, 200, 300], [80, 20, None], [0, 1, 2], -1, (1, True)),
        # Within the margin the incumbent (first covered by distance) keeps the lead.
        ([2, 2, 2], [100, 200, 300], [50, 47, None], [0, 1, 2], -1, (0, True)),
        # 10 % but not 5 ms: no change; 5 ms but not 10 %: no change either.
        ([2, 2], [1, 2], [20, 16], [0, 1], -1, (0, True)),
        ([2, 2], [1, 2], [200, 190], [0, 1], -1, (0, True)),
        # The leader keeps the lead unless beaten.
        ([2, 2, 2], [1, 2, 3], [50, 47, 45], [0, 1, 2], 2, (2, True)),
        ([2, 2, 2], [1, 2, 3], [50, 20, 45], [0, 1, 2], 2, (1, True)),
        # The fastest down: it takes nothing from the incumbent; a usable challenger must beat it by the margin.
        ([2, 2, 2], [1, 2, 3], [50, 20, 45], [0, 2], -1, (0, True)),
        ([2, 2, 2], [1, 2, 3], [50, 20, 30], [0, 2], -1, (2, True)),
        # A down leader: the next covered by RTT.
        ([2, 2, 2], [1, 2, 3], [50, 20, 45], [0, 2], 1, (2, True)),
        # No covered region usable: the distance order answers (not decided).
        ([2, 2, 2], [1, 2, 3], [None, 20, None], [0, 2], -1, (0, False)),
        # Country tier first: evidence for the continent tier does not pull the client out of its country.
        ([0, 1, 1], [900, 1, 2], [None, 80, 20], [0, 1, 2], -1, (0, False)),
        # The country's region down: the continent tier, by RTT.
        ([0, 1, 1], [900, 1, 2], [None, 80, 20], [1, 2], -1, (2, True)),
        # Located and unlocated are one tier for latency: a covered unlocated region may lead.
        ([2, 3], [10, np.inf], [90, 10], [0, 1], -1, (1, True)),
    ],
)
def test_compose(
    tiers: list[int], distances: list[float], rtt: list[float | None], usable: list[int], leader: int, expected: tuple[int, bool]
) -> None:
    assert one(tiers, distances, rtt, usable, leader) == expected


# --- a brute-force reference over the real map --------------------------------------------


def map_value(region_map: RegionMap, address: model.IPAddress) -> int | None:
    ranges = region_map.v4 if address.version == 4 else region_map.v6
    value = int(ranges.values[ranges.index_of(int(address))])
    return None if value <= ALIAS else value


def reference(
    region_map: RegionMap, evidence: PoolEvidence, usable: set[int], address: model.IPAddress, resolver: bool = False
) -> tuple[str, str] | None:
    """(region, kind) for one address, one rule at a time, in plain Python."""
    value = map_value(region_map, address)
    if value is None:
        return None
    ranking_id, rule = value % region_map.stride, value // region_map.stride
    if rule:
        pinned = next((r for r in region_map.rules[rule - 1] if r in usable), None)
        if pinned is not None:
            return NAMES[pinned], "distance"
    place = region_map.places[np.array([ranking_id])]
    tiers, distances = order_keys(place, region_map.geography, np.arange(len(NAMES)))
    tier, distance = [int(t) for t in tiers[0]], [float(d) for d in distances[0]]
    by_name = {name: i for i, name in enumerate(evidence.regions)}

    def as_pool(rtt: tuple[float | None, ...]) -> list[float | None]:
        return [rtt[by_name[n]] if n in by_name else None for n in NAMES]

    candidates: list[tuple[str, list[float | None], int]] = []
    table = evidence.table(address.version)
    row = table.row_of(address)
    if row is not None:
        figures = table.figures(row)
        leader_name = evidence.regions[figures.leader] if figures.leader >= 0 else None
        leader = NAMES.index(leader_name) if leader_name in NAMES else -1
        candidates.append(("network", as_pool(figures.rtt), leader))
    if resolver and address in evidence.resolvers and row is None:
        candidates.append(("resolver", as_pool(evidence.resolvers[address].rtt), -1))
    country = str(place.country[0])
    if ranking_id and country in evidence.countries:
        candidates.append(("country", as_pool(evidence.countries[country].rtt), -1))
    if ranking_id and evidence.vantages and not np.isnan(place.latitude[0]):
        near = [(great_circle(place.latitude[0], place.longitude[0], v.location), i) for i, v in enumerate(evidence.vantages)]
        km, index = min(near)
        if km <= POOL.latency.vantage_radius:
            candidates.append(("vantage", as_pool(evidence.vantages[index].rtt), -1))
    for kind, rtt, leader in candidates:
        chosen = reference_compose(tier, distance, rtt, leader, usable)
        if chosen is not None:
            return NAMES[chosen], kind
    order = sorted(range(len(NAMES)), key=lambda i: (tier[i], distance[i], i))
    return NAMES[next(i for i in order if i in usable)], "distance"


def reference_compose(tier: list[int], distance: list[float], rtt: list[float | None], leader: int, usable: set[int]) -> int | None:
    level = [min(t, 2) for t in tier]
    first = min(level[i] for i in usable)
    covered = [i for i in range(len(tier)) if level[i] == first and rtt[i] is not None]
    if not any(i in usable for i in covered):
        return None
    speed = {i: float(rtt[i]) for i in covered}  # type: ignore[arg-type]
    incumbent = leader if leader in covered else min(covered, key=lambda i: (distance[i], i))
    fastest = min(covered, key=lambda i: (speed[i], i))
    lead = fastest if LATENCY.beats(speed[fastest], speed[incumbent]) else incumbent
    order = [lead, *sorted((i for i in covered if i != lead), key=lambda i: (speed[i], i))]
    return next(i for i in order if i in usable)


def great_circle(lat: float, lon: float, other: tuple[float, float]) -> float:
    from geolb.geo.rank import great_circle_km

    return great_circle_km((float(lat), float(lon)), other)


def random_table(version: int, regions: int, rng: random.Random, count: int, near: list[int]) -> NetworkTable:
    prefix = 24 if version == 4 else 48
    width = 32 if version == 4 else 128
    keys = {rng.getrandbits(prefix) for _ in range(count)} | {n >> (width - prefix) for n in near}
    ordered = np.array(sorted(keys), dtype=np.uint64)
    rtt = np.array([[rng.choice([np.nan, rng.uniform(5, 200)]) for _ in range(regions)] for _ in ordered], dtype=np.float32)
    samples = np.where(np.isnan(rtt), 0, 10).astype(np.uint32)
    leader = np.array([rng.choice([-1, -1, rng.randrange(regions)]) for _ in ordered], dtype=np.int16)
    return NetworkTable(version, ordered, rtt, samples, leader)


def make_evidence(region_map: RegionMap, rng: random.Random) -> PoolEvidence:
    # Evidence columns in another order than the pool's, one pool region missing, one gone from the pool.
    regions = ("ap", "gb", "gone", "us-east", "eu-west")
    # Networks with evidence in places of the database; others there (81.2.69.x GB, 2001:240:: JP) have none.
    located = [int(ipaddress.ip_address(a)) for a in ("216.160.83.56", "89.160.20.112", "175.16.199.1")]
    located6 = [int(ipaddress.ip_address(a)) for a in ("2a02:d4c0::1", "2001:480::1", "2a02:cf40::1", "2001:218::1")]
    v4 = random_table(4, len(regions), rng, 300, located)
    v6 = random_table(6, len(regions), rng, 300, located6)
    countries = {
        "GB": Figures((30.0, 90.0, None, 80.0, 10.0), (9, 9, 0, 9, 9)),
        "US": Figures((None, None, None, 60.0, 20.0), (0, 0, 0, 9, 9)),
        "SE": Figures((10.0, None, None, None, None), (9, 0, 0, 0, 0)),
    }
    vantages = (Vantage("tokyo", (35.0, 139.0), (5.0, None, None, 100.0, 150.0)),)
    resolvers = {
        ipaddress.ip_address("8.8.8.8"): Figures((None, None, None, 30.0, 5.0), (0, 0, 0, 9, 9)),
        ipaddress.ip_address("2001:4860::8888"): Figures((1.0, None, None, None, None), (9, 0, 0, 0, 0)),
    }
    return PoolEvidence("steered", regions, v4, v6, MappingProxyType(resolvers), MappingProxyType(countries), vantages, version=7)


@pytest.fixture(scope="module")
def region_map() -> RegionMap:
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    return region_maps(model.ZoneSet(zones={}, pools={POOL.name: POOL}), locator)[POOL.name]


def samples(network: model.IPNetwork, rng: random.Random) -> list[model.IPAddress]:
    first, last = int(network.network_address), int(network.broadcast_address)
    kind = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
    return [kind(v) for v in {first, last, rng.randint(first, last), rng.randint(first, last)}]


HEALTH = {
    "all up": set(range(5)),
    "us-east down": {1, 2, 3, 4},
    "gb and ap down": {0, 1, 4},
    "only unplaced": {4},
}


@pytest.mark.parametrize("state", sorted(HEALTH))
def test_spliced_answers_and_scopes_agree_with_brute_force(region_map: RegionMap, state: str) -> None:
    rng = random.Random(11)
    evidence = make_evidence(region_map, rng)
    usable = HEALTH[state]
    down = frozenset(e.key for i, r in enumerate(POOL.regions) for e in r.endpoints if i not in usable)
    answers = GeoAnswers({POOL.name: region_map}, HealthView(down), AnswerMemo(), MappingProxyType({POOL.name: evidence}))
    clients: list[model.IPAddress] = []
    for table in (evidence.v4, evidence.v6):
        width, prefix = (32, 24) if table.version == 4 else (128, 48)
        for key in table.keys[:: max(1, len(table) // 60)].tolist() + table.keys[-3:].tolist():
            network = ipaddress.ip_network((int(key) << (width - prefix), prefix))
            clients += samples(network, rng)
            # The neighbours: their scopes must stop at the evidence network.
            if int(network.network_address) > 0:
                clients.append(network.network_address - 1)
            clients.append(network.broadcast_address + 1 if int(network.broadcast_address) + 1 < 1 << width else network.network_address)
    clients += [ipaddress.ip_address(a) for a in ("81.2.69.160", "81.2.69.130", "216.160.83.56", "89.160.20.112", "175.16.199.1")]
    clients += [ipaddress.ip_address(a) for a in ("2a02:d4c0::1", "2001:480::1", "2001:218::1", "10.0.0.1", "8.8.8.8")]
    clients += [ipaddress.ip_address(a) for a in ("2001:240::1", "2001:220::1", "2a02:d4c8::1", "81.2.69.200")]
    clients += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(200)]
    clients += [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(100)]
    kinds = set()
    for client in clients:
        expected = reference(region_map, evidence, usable, client)
        if expected is None:
            continue  # an alias of the IPv4 tree
        family = 6 if state == "only unplaced" else 4  # both families answer from the same map; usable decides
        choice = answers.choose(POOL, family, client)
        assert choice.region is not None
        assert (choice.region.name, choice.evidence) == expected, client
        kinds.add(choice.evidence)
        scope = ipaddress.ip_network((client, choice.scope), strict=False)
        for sample in samples(scope, rng):
            seen = reference(region_map, evidence, usable, sample)
            assert seen is None or seen[0] == expected[0], (client, scope, sample, seen, expected)
    if state != "only unplaced":  # no evidence covers it
        assert {"network", "distance"} <= kinds
    if state == "all up":
        assert {"country", "vantage"} <= kinds


def test_resolver_evidence_only_without_ecs(region_map: RegionMap) -> None:
    evidence = make_evidence(region_map, random.Random(11))
    answers = GeoAnswers({POOL.name: region_map}, ALL_UP, AnswerMemo(), MappingProxyType({POOL.name: evidence}))
    resolver = ipaddress.ip_address("8.8.8.8")
    as_resolver = answers.choose(POOL, 4, resolver, resolver=True)
    assert (as_resolver.region and as_resolver.region.name, as_resolver.evidence) == ("eu-west", "resolver")
    assert reference(region_map, evidence, set(range(5)), resolver, resolver=True) == ("eu-west", "resolver")
    assert answers.choose(POOL, 4, resolver).evidence != "resolver"


def test_geo_pools_ignore_evidence(region_map: RegionMap) -> None:
    geo_pool = dataclasses.replace(POOL, steering="geo")
    evidence = make_evidence(region_map, random.Random(11))
    with_evidence = GeoAnswers({POOL.name: region_map}, ALL_UP, AnswerMemo(), MappingProxyType({POOL.name: evidence}))
    without = GeoAnswers({POOL.name: region_map}, ALL_UP, AnswerMemo())
    for text in ("81.2.69.160", "216.160.83.56", "175.16.199.1", "8.8.8.8"):
        client = ipaddress.ip_address(text)
        assert with_evidence.choose(geo_pool, 4, client) == without.choose(geo_pool, 4, client)
        assert with_evidence.choose(geo_pool, 4, client).evidence == "distance"


def test_geo_rankings_match_the_map(region_map: RegionMap) -> None:
    texts = ["81.2.69.160", "81.2.69.130", "216.160.83.56", "10.1.1.1", "175.16.199.1"]
    addresses = np.array([int(ipaddress.ip_address(t)) for t in texts], dtype=np.uint64)
    rankings = geo_rankings(region_map, POOL, 4, addresses)
    for text, row in zip(texts, rankings.tolist(), strict=True):
        assert tuple(row) == region_map.ranking_of(ipaddress.ip_address(text))[0][: rankings.shape[1]], text
    six = ["2a02:d4c0::1", "2001:480::1", "2001:db8::1"]
    upper = np.array([int(ipaddress.ip_address(t)) >> 64 for t in six], dtype=np.uint64)
    for text, row in zip(six, geo_rankings(region_map, POOL, 6, upper).tolist(), strict=True):
        assert tuple(row) == region_map.ranking_of(ipaddress.ip_address(text))[0], text
    assert range_values(region_map, 4, addresses[:1])[0] == map_value(region_map, ipaddress.ip_address(texts[0]))


def test_describe_names_the_evidence(region_map: RegionMap) -> None:
    evidence = make_evidence(region_map, random.Random(11))
    client = ipaddress.ip_address("81.2.69.200")
    text = describe(evidence, POOL, "country", client, "GB", (51.5, -0.1))
    assert text["text"] == "country GB (9 networks): eu-west 10 ms (9 networks), ap 30 ms (9), us-east 80 ms (9), gb 90 ms (9)"
    near_tokyo = describe(evidence, POOL, "vantage", client, "JP", (35.6, 139.7))
    assert near_tokyo["text"] == "vantage tokyo (35, 139): ap 5 ms, us-east 100 ms, eu-west 150 ms"
    resolver = describe(evidence, POOL, "resolver", ipaddress.ip_address("8.8.8.8"), None, None)
    assert str(resolver["text"]).startswith("resolver 8.8.8.8: eu-west 5 ms (9 samples), us-east 30 ms (9)")
    key = int(evidence.v4.keys[0])
    network = ipaddress.ip_network((key << 8, 24))
    described = describe(evidence, POOL, "network", network.network_address + 7, None, None)
    assert str(described["text"]).startswith(f"rum {network}: ")
    assert describe(evidence, POOL, "distance", client, "GB", None) == {"kind": "distance", "text": "distance", "rtt_ms": {}}
