"""Pool x flattened database -> RegionMap: the region ranking of every network, and per health state an AnswerMap.

Built once per (database, pool geography), off the query path; the query path only
asks an AnswerMap "address -> (region, widest true prefix)", a bisect over a
memoryview. Rankings (SPEC §3 rule 2) are computed for each distinct location of
the database at once with numpy, `networks` rules and special-purpose ranges are
laid over them, and neighbouring ranges that rank alike are merged. Health never
enters the RegionMap, so it is true for any health state; an AnswerMap merges
further, by the region that answers with a given set of regions alive.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from geolb import model
from geolb.geo.mmdbflat import ALIAS, I32, NO_DATA, FlatDatabase, Ranges

EARTH_RADIUS_KM = 6371.0
FORMAT = 2  # bump when the map's meaning or layout changes: old cache files are then ignored


def geography(pool: model.Pool) -> tuple[object, ...]:
    """What a pool's ranking depends on: its regions' places and preferences, and its `networks` rules."""
    regions = tuple(
        (r.name, r.location, tuple(sorted(r.countries)), tuple(sorted(r.continents))) for r in pool.regions
    )  # fmt: skip
    rules = tuple((str(rule.network), rule.regions) for rule in pool.networks)
    return regions, rules


def geography_key(database_digest: str, pool: model.Pool) -> str:
    """The cache key of a pool's map: the database and the geography, nothing else (not health, not endpoints)."""
    text = json.dumps([FORMAT, database_digest, repr(geography(pool))])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RegionMap:
    """Every network's region ranking for one pool: ranges -> ranking id; `rankings[id]` is region indices in order."""

    key: str
    regions: tuple[str, ...]
    rankings: npt.NDArray[np.int16]  # (number of rankings, number of regions)
    v4: Ranges
    v6: Ranges
    aliases: tuple[ipaddress.IPv6Network, ...]
    # IPv6 aliases of the IPv4 tree rank by location, not by IPv4 rules: `v4_located` is the IPv4
    # ranking before rules, and alias_rules[r][id] what IPv6 rule r makes of its ranking id.
    v4_located: Ranges
    alias_rules: npt.NDArray[np.int32]  # (1 + number of rules, number of location rankings); row 0: no rule

    def ranking_of(self, address: model.IPAddress) -> tuple[tuple[int, ...], int]:
        """(region indices in order, widest true prefix) for one address: for tools and tests."""
        value = int(address)
        ranges = self.v4 if address.version == 4 else self.v6
        index = ranges.index_of(value)
        ranking = int(ranges.values[index])
        scope = _range_scope(ranges, index, value)
        if ranking <= ALIAS:
            alias = next(a for a in self.aliases if address in a)
            inner = (value >> (128 - alias.prefixlen - 32)) & 0xFFFFFFFF
            index4 = self.v4_located.index_of(inner)
            ranking = int(self.alias_rules[ALIAS - ranking][int(self.v4_located.values[index4])])
            scope = max(scope, alias.prefixlen + _range_scope(self.v4_located, index4, inner))
        return tuple(int(r) for r in self.rankings[ranking]), scope


def _range_scope(ranges: Ranges, index: int, value: int) -> int:
    first = ranges.start(index)
    last = ranges.start(index + 1) - 1 if index + 1 < len(ranges) else (1 << ranges.width) - 1
    return prefix_within(value, first, last, ranges.width)


def prefix_within(address: int, first: int, last: int, width: int) -> int:
    """The shortest prefix length whose block around `address` lies inside [first, last].

    The block of 2^k addresses holding `address` starts at or after `first` exactly when
    `address` and `first - 1` differ at bit k or above; likewise it ends at or before
    `last` when `address` and `last + 1` differ at bit k or above.
    """
    below = (address ^ (first - 1)).bit_length() - 1 if first > 0 else width
    above = (address ^ (last + 1)).bit_length() - 1
    return width - min(below, above, width)


# --- building ---------------------------------------------------------------------------


def _distances(
    latitude: npt.NDArray[np.float64], longitude: npt.NDArray[np.float64], region: tuple[float, float]
) -> npt.NDArray[np.float64]:
    """Great-circle km from every row to one region: the formula of geo.rank.great_circle_km, vectorized."""
    lat1, lon1 = np.radians(latitude), np.radians(longitude)
    lat2, lon2 = np.radians(region[0]), np.radians(region[1])
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h))), dtype=np.float64)


def rank_rows(pool: model.Pool, flat: FlatDatabase) -> npt.NDArray[np.int16]:
    """Region indices in SPEC order for every location row: country, continent, distance, unlocated last.

    A row that knows nothing (no country, continent or coordinates) gets file order.
    Ties keep file order: two stable sorts, by distance and then by tier.
    """
    rows = flat.locations
    count, regions = len(rows), len(pool.regions)
    if count == 0:
        return np.zeros((0, regions), dtype=np.int16)
    country = np.array([c or "" for c in rows.country], dtype="U2")
    continent = np.array([c or "" for c in rows.continent], dtype="U2")
    located = ~np.isnan(rows.latitude) & ~np.isnan(rows.longitude)
    tier = np.empty((count, regions), dtype=np.int8)
    distance = np.zeros((count, regions), dtype=np.float64)
    for j, region in enumerate(pool.regions):
        by_country = np.isin(country, sorted(region.countries)) if region.countries else np.zeros(count, dtype=bool)
        by_continent = np.isin(continent, sorted(region.continents)) if region.continents else np.zeros(count, dtype=bool)
        tier[:, j] = np.where(by_country, 0, np.where(by_continent, 1, 2 if region.location is not None else 3))
        if region.location is not None:
            distance[:, j] = np.where(located, _distances(rows.latitude, rows.longitude, region.location), 0.0)
    unknown = (country == "") & (continent == "") & ~located
    tier[unknown] = 0  # rule 2c: every region keeps its file place
    distance[unknown] = 0.0
    by_distance = np.argsort(distance, axis=1, kind="stable")
    tiers_then = np.argsort(np.take_along_axis(tier, by_distance, axis=1), axis=1, kind="stable")
    return np.asarray(np.take_along_axis(by_distance, tiers_then, axis=1), dtype=np.int16)


class _Rankings:
    """Distinct rankings, each given an id once."""

    def __init__(self, regions: int) -> None:
        self.regions = regions
        self.ids: dict[tuple[int, ...], int] = {}

    def intern(self, ranking: Sequence[int]) -> int:
        key = tuple(int(r) for r in ranking)
        known = self.ids.get(key)
        if known is None:
            known = self.ids[key] = len(self.ids)
        return known

    def table(self) -> npt.NDArray[np.int16]:
        out = np.zeros((len(self.ids), self.regions), dtype=np.int16)
        for ranking, index in self.ids.items():
            out[index] = ranking
        return out


def build_region_map(pool: model.Pool, flat: FlatDatabase) -> RegionMap:
    """The ranking of every network of `flat` for `pool` (SPEC §3 rule 2, health aside)."""
    names = tuple(r.name for r in pool.regions)
    rankings = _Rankings(len(names))
    unknown = rankings.intern(range(len(names)))
    row_orders = rank_rows(pool, flat)
    if len(row_orders):
        distinct, inverse = np.unique(row_orders, axis=0, return_inverse=True)
        distinct_ids = np.array([rankings.intern(order) for order in distinct], dtype=np.int32)
        row_to_ranking = distinct_ids[inverse.reshape(-1)]
    else:
        row_to_ranking = np.zeros(0, dtype=np.int32)
    # NO_DATA (-1) -> the file-order ranking; ALIAS (-2) stays a marker.
    lookup = np.concatenate([row_to_ranking, np.array([unknown], dtype=np.int32)]).astype(np.int32)

    def base(ranges: Ranges) -> Ranges:
        values = ranges.values
        mapped = np.where(values == NO_DATA, unknown, np.where(values >= 0, lookup[np.maximum(values, 0)], values))
        return Ranges(ranges.width, ranges.hi, ranges.lo, mapped.astype(np.int32))

    v4, v6 = base(flat.v4), base(flat.v6)
    located = v4.merged()
    alias_rules = np.arange(len(rankings.ids), dtype=np.int32).reshape(1, -1)
    if pool.networks:
        v4, v6, alias_rules = _with_rules(pool, names, rankings, v4, v6)
    return RegionMap(
        key=geography_key(flat.digest, pool),
        regions=names,
        rankings=rankings.table(),
        v4=v4.merged(),
        v6=v6.merged(),
        aliases=flat.aliases,
        v4_located=located,
        alias_rules=alias_rules,
    )


def _with_rules(
    pool: model.Pool, names: tuple[str, ...], rankings: _Rankings, v4: Ranges, v6: Ranges
) -> tuple[Ranges, Ranges, npt.NDArray[np.int32]]:
    """SPEC §3 rule 2a: inside a rule's prefix its regions come first, the rest keep their location order.

    The most specific rule wins, so each rule rewrites the location ranking (not what a
    wider rule made of it): values are first tagged with the rule (base + stride x rule),
    then every tagged value is resolved at once.
    """
    stride = len(rankings.ids)
    rules = sorted(pool.networks, key=lambda rule: rule.network.prefixlen)

    def tagger(number: int) -> Callable[[I32], I32]:
        def tag(values: I32) -> I32:
            tagged = np.where(values >= 0, values % stride + stride * number, values)
            return np.where(values <= ALIAS, ALIAS - number, tagged).astype(np.int32)

        return tag

    tags = [(rule.network, tagger(number)) for number, rule in enumerate(rules, start=1)]
    v4 = v4.overlaid([(network, tag) for network, tag in tags if network.version == 4])
    v6 = v6.overlaid([(network, tag) for network, tag in tags if network.version == 6])
    base_table = rankings.table()
    resolve = np.arange(stride, dtype=np.int32)
    resolved = [resolve]
    for rule in rules:
        pinned = [names.index(name) for name in rule.regions]
        resolved.append(
            np.array([rankings.intern([*pinned, *(r for r in base_table[k] if r not in pinned)]) for k in range(stride)], dtype=np.int32)
        )
    table = np.concatenate(resolved)
    return v4.remapped(table), v6.remapped(table), np.stack(resolved)


# --- answering ---------------------------------------------------------------------------


class AnswerMap:
    """address -> (answering region index, widest true prefix), for one family and one set of regions alive.

    Ranges of a RegionMap merged by the region that answers them. IPv4 goes through a
    /16 index (see _V4Index); IPv6 bisects memoryviews of its 128-bit starts, and an
    IPv6 alias of the IPv4 tree continues in an IPv4 index of location rankings.
    """

    def __init__(self, region_map: RegionMap, answer_of_ranking: npt.NDArray[np.int32]) -> None:
        self.region_map = region_map
        v4 = region_map.v4.remapped(answer_of_ranking).merged()
        v6 = region_map.v6.remapped(answer_of_ranking).merged()
        self.ranges = (len(v4), len(v6))
        self._v4 = _V4Index(v4)
        self.lookup4 = self._v4.lookup  # IPv4 only: address -> (region index, prefix length)
        self._v6_hi = np.ascontiguousarray(v6.hi).data
        self._v6_lo = np.ascontiguousarray(v6.lo).data
        self._v6_regions = np.ascontiguousarray(v6.values).data
        self._aliases = tuple((int(a.network_address), int(a.broadcast_address), a.prefixlen) for a in region_map.aliases)
        self._alias4: dict[int, _V4Index] = {}
        same = len(region_map.v4) == len(region_map.v4_located) and np.array_equal(region_map.v4.values, region_map.v4_located.values)
        for marker in {int(v) for v in np.unique(v6.values) if v <= ALIAS}:
            if marker == ALIAS and same:
                self._alias4[marker] = self._v4  # no IPv4 rules: the location rankings are the IPv4 ones
                continue
            table = answer_of_ranking[region_map.alias_rules[ALIAS - marker]]
            self._alias4[marker] = _V4Index(region_map.v4_located.remapped(table).merged())

    def lookup(self, address: int, version: int) -> tuple[int, int]:
        """(region index, prefix length) for an address given as an int."""
        if version == 4:
            return self._v4.lookup(address)
        hi, lo = address >> 64, address & 0xFFFFFFFFFFFFFFFF
        starts_hi, starts_lo = self._v6_hi, self._v6_lo
        after = bisect.bisect_right(starts_hi, hi)
        first = bisect.bisect_left(starts_hi, hi, 0, after)
        # Ranges that start inside this /64 (rare: networks longer than /64) are told apart by the low half.
        index = after - 1 if first == after else max(bisect.bisect_right(starts_lo, lo, first, after), first) - 1
        region = self._v6_regions[index]
        start = starts_hi[index] << 64 | starts_lo[index]
        count = len(starts_hi)
        last = (starts_hi[index + 1] << 64 | starts_lo[index + 1]) - 1 if index + 1 < count else (1 << 128) - 1
        scope = prefix_within(address, start, last, 128)
        if region <= ALIAS:
            for first_address, last_address, prefix in self._aliases:
                if first_address <= address <= last_address:
                    region, inner = self._alias4[region].lookup((address >> (96 - prefix)) & 0xFFFFFFFF)
                    return region, max(scope, prefix + inner)
        return region, scope


def _bit_length(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """int.bit_length for each value (exact below 2^53, which 33-bit values are)."""
    return np.asarray(np.frexp(values.astype(np.float64))[1], dtype=np.int64)


class _V4Index:
    """IPv4 ranges with an index by /16: a /16 inside one range has its region and scope ready (the scope
    is then the same for every address in it); any other /16 bisects only the ranges that start inside it."""

    def __init__(self, ranges: Ranges) -> None:
        starts = np.ascontiguousarray(ranges.hi.astype(np.uint32))
        self._starts = starts.data
        self._regions = np.ascontiguousarray(ranges.values).data
        self._count = len(starts)
        blocks = np.arange(1 << 16, dtype=np.int64) << 16
        wide = starts.astype(np.int64)
        first = np.searchsorted(wide, blocks, "right") - 1
        last = np.searchsorted(wide, blocks + 0xFFFF, "right") - 1
        self._low = np.ascontiguousarray(first.astype(np.uint32)).data
        self._high = np.ascontiguousarray((last + 1).astype(np.uint32)).data
        ends = np.append(wide[1:] - 1, 0xFFFFFFFF)
        # Region and scope of every /16 that lies inside one range, all at once (prefix_within in numpy).
        uniform = first == last
        start_of, end_of = wide[first], ends[first]
        below = np.where(start_of > 0, _bit_length(blocks ^ (start_of - 1)) - 1, 32)
        above = _bit_length(blocks ^ (end_of + 1)) - 1
        scope = 32 - np.minimum(np.minimum(below, above), 32)
        codes = np.where(uniform, np.asarray(ranges.values)[first].astype(np.int64) * 256 + scope, -1).tolist()
        shared = {code: (code >> 8, code & 0xFF) for code in set(codes) if code >= 0}  # a few hundred tuples, shared
        by16: list[tuple[int, int] | None] = [shared.get(code) for code in codes]
        self._by16 = by16

    def lookup(self, address: int) -> tuple[int, int]:
        top = address >> 16
        ready = self._by16[top]
        if ready is not None:
            return ready
        starts = self._starts
        index = bisect.bisect_right(starts, address, self._low[top], self._high[top]) - 1
        first = starts[index]
        last = starts[index + 1] - 1 if index + 1 < self._count else 0xFFFFFFFF
        # prefix_within, inlined: this runs for every IPv4 query in a mixed /16.
        below = (address ^ (first - 1)).bit_length() - 1 if first else 32
        above = (address ^ (last + 1)).bit_length() - 1
        return self._regions[index], 32 - (below if below < above else above)


def answer_table(region_map: RegionMap, usable: frozenset[int]) -> npt.NDArray[np.int32]:
    """For each ranking: the first region in `usable` (SPEC §3 rules 3, 4 and 7 decide which regions are)."""
    table = np.full(len(region_map.rankings), -1, dtype=np.int32)
    for index, ranking in enumerate(region_map.rankings.tolist()):
        table[index] = next((r for r in ranking if r in usable), -1)
    return table


def region_indices(pool: model.Pool) -> Mapping[str, int]:
    return {region.name: index for index, region in enumerate(pool.regions)}
