"""Pool x client x Location x HealthView -> Decision, worked out the straightforward way, with reasons. Pure.

The DNS path answers from precomputed maps (`geo/regionmap.py`); this is the
reference they are tested against, and what `/v1/explain` and `geolb resolve` show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from geolb import model
from geolb.health.state import HealthView

EARTH_RADIUS_KM = 6371.0

# Which endpoints a pool answers with, best first (SPEC §3 rules 3, 4, 7).
READY = "ready"  # up and not busy: the normal case
BUSY = "busy"  # nothing ready anywhere: up-but-busy endpoints answer, before failing open
FAIL_OPEN = "fail open"  # nothing up anywhere: every endpoint of the family


@dataclass(frozen=True)
class Location:
    """What a GeoIP database knows of an address; all None when it knows nothing.

    `network` is the database network holding the address: every address in it has
    the same location, so its prefix length bounds the ECS scope of the answer.
    """

    network: model.IPNetwork
    country: str | None = None
    continent: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    source: str = "none"  # "city", "country centroid", "private", "not in database", ...

    @property
    def coordinates(self) -> tuple[float, float] | None:
        if self.latitude is None or self.longitude is None:
            return None
        return self.latitude, self.longitude

    @property
    def known(self) -> bool:
        return self.country is not None or self.continent is not None or self.coordinates is not None


@dataclass(frozen=True)
class RankedRegion:
    region: model.Region
    reason: str  # why it sits where it does: "networks 10.1.0.0/16", "country US", "1234 km", ...
    distance_km: float | None = None


@dataclass(frozen=True)
class RegionRanking:
    """A pool's regions in preference order for one client network."""

    rule: str  # "networks", "geoip" or "file order"
    regions: tuple[RankedRegion, ...]
    scope: int  # the prefix length around the client for which this ranking holds


@dataclass(frozen=True)
class Decision:
    """The region and endpoints a GEO answer comes from, and how they were picked."""

    pool: str
    family: int  # 4 or 6
    client: model.IPAddress
    location: Location
    ranking: RegionRanking
    region: model.Region | None  # None: the pool has no endpoint of this family (NODATA)
    candidates: tuple[model.Endpoint, ...]  # the region's endpoints eligible to answer
    skipped: tuple[tuple[str, str], ...]  # (region, why) for regions passed over
    tier: str  # READY, BUSY or FAIL_OPEN

    @property
    def failed_open(self) -> bool:
        return self.tier == FAIL_OPEN


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def rank_regions(pool: model.Pool, client: model.IPAddress, location: Location) -> RegionRanking:
    """SPEC §3 rule 2: `networks`, then the GeoIP location, then file order.

    The scope is the location's network, narrowed so that it holds no `networks`
    rule that would rank differently; a caller may widen it (see `geo.scope`).
    """
    matched = _matching_rule(pool.networks, client)
    if matched is not None:
        pinned = [pool.region(name) for name in matched.regions]
        first = tuple(RankedRegion(r, f"networks {matched.network}") for r in pinned if r is not None)
        rest = _by_location(pool, location, exclude={r.region.name for r in first})
        scope = scope_excluding(client, matched.network.prefixlen, [r.network for r in pool.networks if r is not matched])
        return RegionRanking("networks", first + rest, scope)
    return rank_by_location(pool, client, location)


def rank_by_location(pool: model.Pool, client: model.IPAddress, location: Location) -> RegionRanking:
    """Rule 2b/2c alone: the ranking for a client that no `networks` rule covers."""
    scope = scope_excluding(client, location.network.prefixlen, [r.network for r in pool.networks])
    rule = "geoip" if location.known else "file order"
    return RegionRanking(rule, _by_location(pool, location, exclude=set()), scope)


def _by_location(pool: model.Pool, location: Location, exclude: set[str]) -> tuple[RankedRegion, ...]:
    """Country, then continent, then the rest; within each, by distance, regions without a location after
    located ones, ties in file order (as the region maps order them: regionmap.order_keys).

    A client with no location at all gets every region in file order (rule 2c).
    """
    if not location.known:
        return tuple(RankedRegion(r, "no client location: file order") for r in pool.regions if r.name not in exclude)
    ranked: list[tuple[int, float, int, RankedRegion]] = []
    here = location.coordinates
    for index, region in enumerate(pool.regions):
        if region.name in exclude:
            continue
        if location.country is not None and location.country in region.countries:
            tier, why = 0, f"country {location.country}"
        elif location.continent is not None and location.continent in region.continents:
            tier, why = 1, f"continent {location.continent}"
        else:
            tier, why = (2, "") if region.location is not None else (3, "region has no location")
        if region.location is None:
            km, text = math.inf, why or "region has no location"
        elif here is None:
            km, text = 0.0, why or "no client location: file order"
        else:
            km = great_circle_km(here, region.location)
            text = why or f"{km:.0f} km"
        ranked.append((tier, km, index, RankedRegion(region, text, None if math.isinf(km) or here is None else km)))
    ranked.sort(key=lambda item: item[:3])
    return tuple(item[3] for item in ranked)


def _matching_rule(rules: Sequence[model.NetworkRule], client: model.IPAddress) -> model.NetworkRule | None:
    best: model.NetworkRule | None = None
    for rule in rules:
        if (
            rule.network.version == client.version
            and client in rule.network
            and (best is None or rule.network.prefixlen > best.network.prefixlen)
        ):
            best = rule
    return best


def scope_excluding(client: model.IPAddress, base: int, networks: Sequence[model.IPNetwork]) -> int:
    """The shortest prefix around `client`, at least `base` bits, that overlaps none of `networks`.

    Only networks not holding the client count. One that shares `n` leading bits
    with the client lies inside every prefix of `n` bits or fewer, so the scope
    must be at least `n + 1`.
    """
    scope = base
    width = client.max_prefixlen
    value = int(client)
    for network in networks:
        if network.version != client.version or client in network:
            continue
        shared = width - (value ^ int(network.network_address)).bit_length()
        if shared >= scope:
            scope = min(width, shared + 1)
    return scope


def choose(
    pool: model.Pool,
    client: model.IPAddress,
    location: Location,
    ranking: RegionRanking,
    family: int,
    health: HealthView,
) -> Decision:
    """SPEC §3 rules 3, 4 and 7: the first region with an endpoint of the family that is up and not busy;
    with none anywhere, the first with one up (busy); with none up, fail open."""
    of_family = {r.region.name: [e for e in r.region.endpoints if e.address.version == family] for r in ranking.regions}
    up = {name: [e for e in endpoints if health.is_up(pool.name, name, e)] for name, endpoints in of_family.items()}
    ready = {name: [e for e in endpoints if not health.is_busy(pool.name, name, e)] for name, endpoints in up.items()}
    if any(ready.values()):
        tier, usable = READY, ready
    elif any(up.values()):
        tier, usable = BUSY, up
    else:
        tier, usable = FAIL_OPEN, of_family
    skipped: list[tuple[str, str]] = []
    for ranked in ranking.regions:
        name = ranked.region.name
        if usable[name]:
            return Decision(pool.name, family, client, location, ranking, ranked.region, tuple(usable[name]), tuple(skipped), tier)
        skipped.append((name, _skip_reason(family, len(of_family[name]), len(up[name]))))
    return Decision(pool.name, family, client, location, ranking, None, (), tuple(skipped), tier)


def _skip_reason(family: int, endpoints: int, up: int) -> str:
    if not endpoints:
        return f"no IPv{family} endpoint"
    if not up:
        return f"every IPv{family} endpoint is down"
    if up == endpoints:
        return f"every IPv{family} endpoint is busy (shedding load)"
    return f"every IPv{family} endpoint is busy or down ({up} busy, {endpoints - up} down)"
