"""Pool x flattened database -> RegionMap: the region ranking of every network, and per health state an AnswerMap.

Built once per (database, pool geography), off the query path; the query path only
asks an AnswerMap "address -> (region, widest true prefix)", a bisect over a
memoryview. Rankings (SPEC §3 rule 2) are computed with numpy for the distinct
locations of the database, a chunk at a time (the memory of a build does not grow
with the pool: a large pool keeps only the start of each ranking), `networks` rules
and special-purpose ranges are laid over them, and neighbouring ranges that rank
alike are merged. Health never
enters the RegionMap, so it is true for any health state; an AnswerMap merges
further, by the region that answers with a given set of regions alive.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from geolb import model
from geolb.geo.mmdbflat import ALIAS, I32, NO_DATA, FlatDatabase, Ranges

EARTH_RADIUS_KM = 6371.0
FORMAT = 5  # bump when the map's meaning or layout changes: old cache files are then ignored


def geography(pool: model.Pool) -> tuple[object, ...]:
    """What a pool's ranking depends on: its regions' places and preferences, and its `networks` rules."""
    regions = tuple(
        (r.name, r.location, tuple(sorted(r.countries)), tuple(sorted(r.continents))) for r in pool.regions
    )  # fmt: skip
    rules = tuple((str(rule.network), rule.regions) for rule in pool.networks)
    if pool.steering == "latency":
        return regions, rules, "per-place"  # latency pools keep one ranking id per place (see build_region_map)
    return regions, rules


def geography_key(database_digest: str, pool: model.Pool) -> str:
    """The cache key of a pool's map: the database and the geography, nothing else (not health, not endpoints)."""
    text = json.dumps([FORMAT, database_digest, repr(geography(pool))])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Geography:
    """A pool's regions as the ranking sees them: place, countries and continents, in file order."""

    locations: tuple[tuple[float, float] | None, ...]
    countries: tuple[tuple[str, ...], ...]
    continents: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, pool: model.Pool) -> Geography:
        return cls(
            tuple(r.location for r in pool.regions),
            tuple(tuple(sorted(r.countries)) for r in pool.regions),
            tuple(tuple(sorted(r.continents)) for r in pool.regions),
        )

    def __len__(self) -> int:
        return len(self.locations)


@dataclass(frozen=True)
class Places:
    """Client places to rank regions for: country and continent codes ("" unknown), degrees (NaN unknown)."""

    country: npt.NDArray[np.str_]
    continent: npt.NDArray[np.str_]
    latitude: npt.NDArray[np.float64]
    longitude: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.country)

    def __getitem__(self, rows: slice | npt.NDArray[np.int64]) -> Places:
        return Places(self.country[rows], self.continent[rows], self.latitude[rows], self.longitude[rows])


@dataclass(frozen=True)
class RegionMap:
    """Every network's region ranking for one pool: ranges -> ranking id (+ stride x the `networks` rule that applies).

    `rankings[id]` is the start of a ranking (region indices, best first): all of it for a
    pool of at most PREFIX regions. For a larger pool only the first PREFIX regions are
    kept; when none of them may answer, the answer is worked out again from the ranking's
    place (`places[id]`), exactly as the ranking was (see first_usable). A `networks` rule
    r puts its regions (`rules[r - 1]`) before the ranking of the location: that is never
    stored, the answer table resolves it.
    """

    key: str
    regions: tuple[str, ...]
    geography: Geography
    rankings: npt.NDArray[np.int16]  # (number of rankings, min(PREFIX, number of regions))
    places: Places  # of each ranking; id 0 is the file order (no place known)
    rules: tuple[tuple[int, ...], ...]  # region indices each rule puts first, by rule number - 1
    v4: Ranges
    v6: Ranges
    aliases: tuple[ipaddress.IPv6Network, ...]
    # IPv6 aliases of the IPv4 tree rank by location, not by IPv4 rules: `v4_located` is the IPv4
    # ranking before rules (`v4` itself when no rule is IPv4); an alias marker ALIAS - r applies rule r to it.
    v4_located: Ranges

    @property
    def stride(self) -> int:
        return len(self.rankings)

    def full_ranking(self, value: int) -> tuple[int, ...]:
        """The whole ranking behind a range value (ranking id + stride x rule): for tools and tests."""
        ranking_id, rule = value % self.stride, value // self.stride
        regions = np.arange(len(self.regions))
        tier, distance = order_keys(self.places[np.array([ranking_id])], self.geography, regions)
        ranking = [int(r) for r in np.lexsort((distance, tier), axis=1)[0]]
        if rule:
            pinned = self.rules[rule - 1]
            ranking = [*pinned, *(r for r in ranking if r not in pinned)]
        return tuple(ranking)

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
            ranking = int(self.v4_located.values[index4]) + self.stride * (ALIAS - ranking)
            scope = max(scope, alias.prefixlen + _range_scope(self.v4_located, index4, inner))
        return self.full_ranking(ranking), scope


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


def order_keys(
    places: Places, geography: Geography, columns: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    """(tier, distance) of each place (rows) to each region in `columns`: SPEC order is by tier, then
    distance, then file order. Tier: 0 country, 1 continent, 2 located, 3 unlocated; a place that
    knows nothing (no country, continent or coordinates) ranks every region alike (file order).

    The one definition of the order: the map's rankings and the answers worked out again when
    their stored start is exhausted both come from here, so they can never disagree.
    """
    count = len(places)
    located = ~np.isnan(places.latitude) & ~np.isnan(places.longitude)
    tier = np.empty((count, len(columns)), dtype=np.int8)
    distance = np.zeros((count, len(columns)), dtype=np.float64)
    for column, j in enumerate(columns.tolist()):
        countries, continents, location = geography.countries[j], geography.continents[j], geography.locations[j]
        by_country = np.isin(places.country, countries) if countries else np.zeros(count, dtype=bool)
        by_continent = np.isin(places.continent, continents) if continents else np.zeros(count, dtype=bool)
        tier[:, column] = np.where(by_country, 0, np.where(by_continent, 1, 2 if location is not None else 3))
        if location is not None:
            distance[:, column] = np.where(located, _distances(places.latitude, places.longitude, location), 0.0)
        else:
            distance[:, column] = np.inf  # rule 2b: in a country or continent tier too, after the located regions
    unknown = (places.country == "") & (places.continent == "") & ~located
    tier[unknown] = 0  # rule 2c: every region keeps its file place
    distance[unknown] = 0.0
    return tier, distance


def first_usable(places: Places, geography: Geography, usable: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    """The first region of `usable` (sorted region indices) in each place's ranking, worked out from the place."""
    out = np.empty(len(places), dtype=np.int32)
    step = max(1, CHUNK_CELLS // max(1, len(usable)))
    for start in range(0, len(places), step):
        tier, distance = order_keys(places[start : start + step], geography, usable)
        out[start : start + step] = usable[np.lexsort((distance, tier), axis=1)[:, 0]]
    return out


PREFIX = 32  # regions of a ranking kept: beyond them, answers are worked out again from the place
CHUNK_CELLS = 4_000_000  # places x regions ranked at once: bounds the build's memory whatever the pool
Progress = Callable[[int, int], None]  # (done, total)


def database_places(flat: FlatDatabase) -> Places:
    rows = flat.locations
    return Places(
        np.array([c or "" for c in rows.country], dtype="U2"),
        np.array([c or "" for c in rows.continent], dtype="U2"),
        np.asarray(rows.latitude, dtype=np.float64),
        np.asarray(rows.longitude, dtype=np.float64),
    )


def build_region_map(
    pool: model.Pool, flat: FlatDatabase, prefix: int = PREFIX, chunk_cells: int = CHUNK_CELLS, progress: Progress | None = None
) -> RegionMap:
    """The ranking of every network of `flat` for `pool` (SPEC §3 rule 2, health aside).

    Locations are ranked a chunk at a time (memory bounded by `chunk_cells`); a pool
    of at most `prefix` regions keeps whole rankings, each distinct one once; a larger
    one keeps the first `prefix` regions of each location's ranking. A pool with `steering: latency` keeps an id
    per place like a large pool does, so that country and vantage evidence (steer/overlay.py) can tell places apart.
    """
    names = tuple(r.name for r in pool.regions)
    geography = Geography.of(pool)
    width = min(prefix, len(names))
    whole = width == len(names) and pool.steering != "latency"  # whole rankings: equal ones share an id
    places = database_places(flat)
    count = len(places)
    columns = np.arange(len(names), dtype=np.int64)
    file_order = columns[:width].astype(np.int16)
    ids: dict[bytes, int] = {file_order.tobytes(): 0}
    kept: list[npt.NDArray[np.int16]] = [file_order.reshape(1, -1)]
    representatives: list[npt.NDArray[np.int64]] = [np.full(1, -1, dtype=np.int64)]
    row_to_id = np.zeros(count, dtype=np.int32)
    next_id = 1
    step = max(1, chunk_cells // max(1, len(names)))
    for start in range(0, count, step):
        stop = min(count, start + step)
        tier, distance = order_keys(places[start:stop], geography, columns)
        orders = np.lexsort((distance, tier), axis=1)[:, :width].astype(np.int16)
        del tier, distance
        if whole:
            distinct, first, inverse = np.unique(orders, axis=0, return_index=True, return_inverse=True)
            local = np.empty(len(distinct), dtype=np.int32)
            for index, order in enumerate(distinct):
                known = ids.setdefault(order.tobytes(), next_id)
                if known == next_id:
                    kept.append(order.reshape(1, -1))
                    representatives.append(np.array([start + int(first[index])], dtype=np.int64))
                    next_id += 1
                local[index] = known
            row_to_id[start:stop] = local[inverse.reshape(-1)]
        else:
            kept.append(orders)
            representatives.append(np.arange(start, stop, dtype=np.int64))
            row_to_id[start:stop] = np.arange(next_id, next_id + stop - start, dtype=np.int32)
            next_id += stop - start
        if progress is not None:
            progress(stop, count)
    rankings = np.concatenate(kept)
    del kept
    rows = np.concatenate(representatives)
    unknown_place = Places(np.array([""], dtype="U2"), np.array([""], dtype="U2"), np.full(1, np.nan), np.full(1, np.nan))
    id_places = places[np.maximum(rows, 0)] if count else unknown_place
    id_places = Places(
        np.where(rows < 0, "", id_places.country).astype("U2"),
        np.where(rows < 0, "", id_places.continent).astype("U2"),
        np.where(rows < 0, np.nan, id_places.latitude),
        np.where(rows < 0, np.nan, id_places.longitude),
    )
    # NO_DATA (-1) -> the file-order ranking (id 0); ALIAS (-2) stays a marker.
    lookup = np.concatenate([row_to_id, np.zeros(1, dtype=np.int32)])

    def base(ranges: Ranges) -> Ranges:
        values = ranges.values
        mapped = np.where(values == NO_DATA, 0, np.where(values >= 0, lookup[np.maximum(values, 0)], values))
        return Ranges(ranges.width, ranges.hi, ranges.lo, mapped.astype(np.int32))

    v4, v6 = base(flat.v4), base(flat.v6)
    located = v4 = v4.merged()
    rules = sorted(pool.networks, key=lambda rule: rule.network.prefixlen)
    if rules:
        v4, v6 = _with_rules(rules, len(rankings), v4, v6)
        v4 = located if not any(rule.network.version == 4 for rule in rules) else v4.merged()
    return RegionMap(
        key=geography_key(flat.digest, pool),
        regions=names,
        geography=geography,
        rankings=rankings,
        places=id_places,
        rules=tuple(tuple(names.index(name) for name in rule.regions) for rule in rules),
        v4=v4,
        v6=v6.merged(),
        aliases=flat.aliases,
        v4_located=located,
    )


def _with_rules(rules: list[model.NetworkRule], stride: int, v4: Ranges, v6: Ranges) -> tuple[Ranges, Ranges]:
    """SPEC §3 rule 2a: inside a rule's prefix its regions come first, the rest keep their location order.

    The most specific rule wins, so each rule tags the location ranking (not what a wider
    rule made of it): value = ranking id + stride x rule number (rules sorted widest first).
    """

    def tagger(number: int) -> Callable[[I32], I32]:
        def tag(values: I32) -> I32:
            tagged = np.where(values >= 0, values % stride + stride * number, values)
            return np.where(values <= ALIAS, ALIAS - number, tagged).astype(np.int32)

        return tag

    tags = [(rule.network, tagger(number)) for number, rule in enumerate(rules, start=1)]
    v4 = v4.overlaid([(network, tag) for network, tag in tags if network.version == 4])
    v6 = v6.overlaid([(network, tag) for network, tag in tags if network.version == 6])
    return v4, v6


# --- answering ---------------------------------------------------------------------------


class AnswerMap:
    """address -> (answering region index, widest true prefix), for one family and one set of regions alive.

    Ranges of a RegionMap merged by the region that answers them. IPv4 goes through a
    /16 index (see _V4Index); IPv6 bisects memoryviews of its 128-bit starts, and an
    IPv6 alias of the IPv4 tree continues in an IPv4 index of location rankings.
    """

    def __init__(
        self,
        region_map: RegionMap,
        answer_of_ranking: npt.NDArray[np.int32],
        spliced: tuple[Ranges, Ranges] | None = None,
        v4_networks: npt.NDArray[np.uint64] | None = None,
    ) -> None:
        """`spliced`: (IPv4, IPv6) ranges whose values are already answers (latency steering's networks laid in);
        `v4_networks`: the /24s (address >> 8) with evidence of their own, indexed for one dict lookup each."""
        self.region_map = region_map
        if spliced is None:
            v4 = region_map.v4.remapped(answer_of_ranking).merged()
            v6 = region_map.v6.remapped(answer_of_ranking).merged()
        else:
            v4, v6 = spliced
        self.ranges = (len(v4), len(v6))
        self._v4: _V4Index | _V4Index24 = _V4Index(v4) if v4_networks is None else _V4Index24(v4, v4_networks)
        self.lookup4 = self._v4.lookup  # IPv4 only: address -> (region index, prefix length)
        self._v6_hi = np.ascontiguousarray(v6.hi).data
        self._v6_lo = np.ascontiguousarray(v6.lo).data
        self._v6_regions = np.ascontiguousarray(v6.values).data
        self._aliases = tuple((int(a.network_address), int(a.broadcast_address), a.prefixlen) for a in region_map.aliases)
        self._alias4: dict[int, _V4Index | _V4Index24] = {}
        same = region_map.v4_located is region_map.v4
        stride = region_map.stride
        for marker in {int(v) for v in np.unique(v6.values) if v <= ALIAS}:
            if marker == ALIAS and same:
                self._alias4[marker] = self._v4  # no IPv4 rules: the location rankings are the IPv4 ones
                continue
            rule = ALIAS - marker
            table = answer_of_ranking[stride * rule : stride * (rule + 1)]
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


BY24_LIMIT = 262_144  # /24s with their answer ready in a dict (about 20 MB); the others bisect


class _V4Index24:
    """_V4Index for a map with networks spliced in (latency steering). The /24s with evidence of their own, where
    most of a steered pool's queries come from, have their region and scope ready in a dict (one lookup, looked at
    first); the other addresses go by blocks of /20 rather than /16 (a million entries, about 16 MB), since spliced
    /24s would make most /16s mixed and send their addresses to the bisect."""

    BLOCK = 12  # address bits inside a block: /20

    def __init__(self, ranges: Ranges, networks: npt.NDArray[np.uint64]) -> None:
        block_bits = self.BLOCK
        starts = np.ascontiguousarray(ranges.hi.astype(np.uint32))
        self._starts = starts.data
        self._regions = np.ascontiguousarray(ranges.values).data
        self._count = len(starts)
        wide = starts.astype(np.int64)
        ends = np.append(wide[1:] - 1, 0xFFFFFFFF)
        values = np.asarray(ranges.values).astype(np.int64)

        def ready(first_addresses: npt.NDArray[np.int64], size: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
            """For aligned blocks of `size` addresses: (range index of the first address, region * 256 + scope or -1)."""
            first = np.searchsorted(wide, first_addresses, "right") - 1
            last = np.searchsorted(wide, first_addresses + size - 1, "right") - 1
            start_of, end_of = wide[first], ends[first]
            below = np.where(start_of > 0, _bit_length(first_addresses ^ (start_of - 1)) - 1, 32)
            above = _bit_length(first_addresses ^ (end_of + 1)) - 1
            scope = 32 - np.minimum(np.minimum(below, above), 32)
            return first, np.where(first == last, values[first] * 256 + scope, -1)

        blocks = np.arange(1 << (32 - block_bits), dtype=np.int64) << block_bits
        first, codes = ready(blocks, 1 << block_bits)
        last = np.searchsorted(wide, blocks + (1 << block_bits) - 1, "right") - 1
        self._low = np.ascontiguousarray(first.astype(np.uint32)).data
        self._high = np.ascontiguousarray((last + 1).astype(np.uint32)).data
        shared = {code: (code >> 8, code & 0xFF) for code in set(codes.tolist()) if code >= 0}
        self._by_block: list[tuple[int, int] | None] = [shared.get(code) for code in codes.tolist()]
        mixed = np.asarray(networks, dtype=np.int64)
        mixed = mixed[codes[mixed >> (block_bits - 8)] < 0][:BY24_LIMIT]
        _first24, codes24 = ready(mixed << 8, 256)
        self._by24: dict[int, tuple[int, int]] = {
            key: shared.setdefault(code, (code >> 8, code & 0xFF))
            for key, code in zip(mixed.tolist(), codes24.tolist(), strict=True)
            if code >= 0
        }

    def lookup(self, address: int) -> tuple[int, int]:
        top = address >> 12
        ready = self._by_block[top]
        if ready is not None:
            return ready
        ready = self._by24.get(address >> 8)
        if ready is not None:
            return ready
        starts = self._starts
        index = bisect.bisect_right(starts, address, self._low[top], self._high[top]) - 1
        first = starts[index]
        last = starts[index + 1] - 1 if index + 1 < self._count else 0xFFFFFFFF
        below = (address ^ (first - 1)).bit_length() - 1 if first else 32
        above = (address ^ (last + 1)).bit_length() - 1
        return self._regions[index], 32 - (below if below < above else above)


def answer_table(region_map: RegionMap, usable: frozenset[int]) -> npt.NDArray[np.int32]:
    """For each range value (ranking id + stride x rule): the first region in `usable` (SPEC §3 rules 3, 4 and 7
    decide which regions are), -1 when none is. A rule's regions come first, then its location's ranking."""
    allowed = np.zeros(len(region_map.regions), dtype=bool)
    allowed[sorted(usable)] = True
    rankings = region_map.rankings
    stride = len(rankings)
    table = np.full(stride, -1, dtype=np.int32)
    step = max(1, CHUNK_CELLS // max(1, rankings.shape[1]))
    for start in range(0, stride, step):
        block = np.asarray(rankings[start : start + step], dtype=np.int64)
        hit = allowed[block]
        first = hit.argmax(axis=1)
        rows = np.arange(len(block))
        table[start : start + len(block)] = np.where(hit[rows, first], block[rows, first], -1)
    if rankings.shape[1] < len(region_map.regions) and usable:
        exhausted = np.flatnonzero(table < 0)  # none of the stored start may answer: rank from the place
        if len(exhausted):
            table[exhausted] = first_usable(region_map.places[exhausted], region_map.geography, np.array(sorted(usable), dtype=np.int64))
    resolved = [table]
    for pinned in region_map.rules:
        chosen = next((r for r in pinned if r in usable), None)
        resolved.append(table if chosen is None else np.full(stride, chosen, dtype=np.int32))
    return np.concatenate(resolved)


def region_indices(pool: model.Pool) -> Mapping[str, int]:
    return {region.name: index for index, region in enumerate(pool.regions)}
