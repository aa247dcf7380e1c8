"""PoolEvidence laid over a pool's RegionMap (SPEC §10): per place, per network and per resolver answers. Pure numpy.

The ordering rule is steer/evidence.py's: `networks` rules and the country and
continent tiers stay first; within the first tier that holds a region able to
answer, the regions the evidence covers lead (the incumbent keeps the lead unless
another covered region `Latency.beats` it, the rest follow by RTT), and when no
covered region there can answer, the first by distance does, as without evidence.

Answers are encoded `kind * regions + region` (kind: KINDS), so that one AnswerMap
lookup gives both the region and the evidence that chose it, and GeoEntry counts
answers per kind at no extra cost per query. Country and vantage evidence are per
place, folded into the table of ranking ids (a latency pool's map keeps an id per
place); network evidence (/24, /48) is spliced into the ranges, so a network with
its own evidence gets a scope of at least its prefix and its neighbours' scopes
narrow by the split alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from geolb import model
from geolb.geo.mmdbflat import ALIAS, MASK64, Ranges
from geolb.geo.regionmap import AnswerMap, Places, RegionMap, answer_table, order_keys
from geolb.steer.evidence import V4_PREFIX, V6_PREFIX, Figures, NetworkTable, PoolEvidence, Vantage

KINDS = ("distance", "network", "resolver", "country", "vantage")
DISTANCE, NETWORK, RESOLVER, COUNTRY, VANTAGE = range(len(KINDS))
EARTH_RADIUS_KM = 6371.0
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]
COMPOSE_CELLS = 1 << 18  # places x regions composed at once: compose() holds a dozen float64 arrays of this size


# --- rankings (the aggregator's GeoOrder) ------------------------------------------------


def range_values(region_map: RegionMap, version: int, addresses: npt.NDArray[np.uint64]) -> I64:
    """The RegionMap value (ranking id + stride x rule) of each address; IPv6 given as its upper 64 bits.

    An IPv6 address in an alias of the IPv4 tree takes its IPv4 address's location ranking (as AnswerMap does)
    when the upper 64 bits hold it (6to4), else the file order."""
    addresses = np.asarray(addresses, dtype=np.uint64)
    if version == 4:
        ranges = region_map.v4
        index = np.searchsorted(ranges.hi, addresses, "right") - 1
        return np.asarray(ranges.values[np.maximum(index, 0)], dtype=np.int64)
    ranges = region_map.v6
    at = np.searchsorted(ranges.hi, addresses, "left")
    inside = at < len(ranges)
    exact = inside & (ranges.hi[np.minimum(at, len(ranges) - 1)] == addresses) & (ranges.lo[np.minimum(at, len(ranges) - 1)] == 0)
    index = np.where(exact, at, at - 1)
    values = np.asarray(ranges.values[np.maximum(index, 0)], dtype=np.int64)
    for row in np.flatnonzero(values <= ALIAS).tolist():
        marker, high = int(values[row]), int(addresses[row])
        values[row] = 0
        for alias in region_map.aliases:
            if alias.prefixlen + 32 <= 64 and (high << 64) in alias:
                inner = (high >> (64 - alias.prefixlen - 32)) & 0xFFFFFFFF
                located = region_map.v4_located
                found = int(located.values[int(np.searchsorted(located.hi, np.uint64(inner), "right")) - 1])
                values[row] = found % region_map.stride + region_map.stride * (ALIAS - marker)
    return values


def geo_rankings(region_map: RegionMap, pool: model.Pool, version: int, addresses: npt.NDArray[np.uint64]) -> npt.NDArray[np.int16]:
    """GeoOrder (steer/aggregate.py): each address's region indices in SPEC §3 rule-2 order, `networks` rules
    included, the first k = min(32, regions) of them."""
    del pool  # the map is the pool's
    values = range_values(region_map, version, addresses)
    stride = region_map.stride
    out = np.asarray(region_map.rankings[values % stride], dtype=np.int16).copy()
    rules = values // stride
    width = out.shape[1]
    for rule in np.unique(rules[rules > 0]).tolist():
        pinned = np.array(region_map.rules[rule - 1], dtype=np.int16)
        rows = np.flatnonzero(rules == rule)
        block = out[rows]
        pinned_here = np.isin(block, pinned)
        # The location's ranking with its pinned regions moved to the end (stable), behind the pinned ones: cut to width.
        kept = np.take_along_axis(block, np.argsort(pinned_here, axis=1, kind="stable"), axis=1)
        merged = np.concatenate([np.broadcast_to(pinned, (len(rows), len(pinned))), kept], axis=1)[:, :width]
        out[rows] = merged
    return out


# --- composing evidence with a ranking ---------------------------------------------------


def columns_of(evidence: PoolEvidence, pool: model.Pool) -> I64:
    """For each region of the pool, its column in the evidence (-1: not measured)."""
    where = {name: i for i, name in enumerate(evidence.regions)}
    return np.array([where.get(region.name, -1) for region in pool.regions], dtype=np.int64)


def pool_rtt(rtt: npt.NDArray[np.floating], columns: I64) -> F64:
    """Evidence RTTs ([..., evidence regions]) as the pool's columns, NaN where a region has no figure."""
    values = np.asarray(rtt, dtype=np.float64)
    padded = np.concatenate([values, np.full((*values.shape[:-1], 1), np.nan)], axis=-1)
    return np.asarray(padded[..., np.where(columns >= 0, columns, values.shape[-1])], dtype=np.float64)


def pool_leader(leader: npt.NDArray[np.integer], columns: I64) -> I64:
    """Evidence region indices (leaders) as the pool's region indices, -1 when absent or not in the pool."""
    inverse = np.full(max(int(columns.max(initial=-1)) + 2, 1), -1, dtype=np.int64)
    for index, column in enumerate(columns.tolist()):
        if column >= 0:
            inverse[column] = index
    leader = np.asarray(leader, dtype=np.int64)
    inside = (leader >= 0) & (leader < len(inverse) - 1)
    return np.where(inside, inverse[np.where(inside, leader, len(inverse) - 1)], -1)


def compose(tier: npt.NDArray[np.int8], distance: F64, rtt: F64, leader: I64, usable: BOOL, latency: model.Latency) -> tuple[I64, BOOL]:
    """(answering region, decided by the evidence) per row, from the rows' §3 tiers and distances to every region
    ([n, regions]), RTTs ([n, regions] or [regions], NaN uncovered), leaders ([n], -1 none) and the usable regions.

    Not decided: no covered region of the first tier holding a usable region is usable: the distance order answers.
    """
    count, width = tier.shape
    rows = np.arange(count)
    rtt = np.broadcast_to(rtt, (count, width))
    level = np.minimum(tier, 2)  # located and unlocated regions are one tier: latency replaces the distance sort
    first = np.where(usable, level, 127).min(axis=1, initial=127)
    in_tier = level == first[:, None]
    covered = in_tier & ~np.isnan(rtt)
    candidates = covered & usable
    decided = candidates.any(axis=1)
    # The incumbent: the leader when it is covered in this tier, else the first covered region by distance.
    by_distance = np.where(covered, np.nan_to_num(distance, posinf=1e12), np.inf).argmin(axis=1)
    known = (leader >= 0) & covered[rows, np.maximum(leader, 0)]
    incumbent = np.where(known, leader, by_distance)
    # The challenger is the fastest region that can answer: a faster one that is down takes nothing from the
    # incumbent (which, when down itself, gives way to the fastest usable one below).
    fastest = np.where(candidates, rtt, np.inf).argmin(axis=1)
    held, challenger = rtt[rows, incumbent], rtt[rows, fastest]
    gain = held - challenger
    lead = np.where((gain > latency.margin_ms) & (gain > latency.margin * held), fastest, incumbent)
    others = np.where(candidates, rtt, np.inf)
    others[rows, lead] = np.inf
    answer = np.where(usable[lead], lead, others.argmin(axis=1))
    return answer.astype(np.int64), decided


def _order_keys(places: Places, region_map: RegionMap) -> tuple[npt.NDArray[np.int8], F64]:
    return order_keys(places, region_map.geography, np.arange(len(region_map.regions), dtype=np.int64))


def _compose_places(region_map: RegionMap, ids: I64, rtt: F64, leader: I64, usable: BOOL, latency: model.Latency) -> tuple[I64, BOOL]:
    """compose() for ranking ids (their places), a chunk at a time."""
    answers = np.empty(len(ids), dtype=np.int64)
    decided = np.zeros(len(ids), dtype=bool)
    step = max(1, COMPOSE_CELLS // max(1, len(region_map.regions)))
    for start in range(0, len(ids), step):
        part = slice(start, start + step)
        tier, distance = _order_keys(region_map.places[ids[part]], region_map)
        chunk_rtt = rtt if rtt.ndim == 1 else rtt[part]
        answers[part], decided[part] = compose(tier, distance, chunk_rtt, leader[part], usable, latency)
    return answers, decided


def _distance_km(latitude: F64, longitude: F64, place: tuple[float, float]) -> F64:
    lat1, lon1 = np.radians(latitude), np.radians(longitude)
    lat2, lon2 = np.radians(place[0]), np.radians(place[1])
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h))), dtype=np.float64)


def nearest_vantage(vantages: tuple[Vantage, ...], latitude: F64, longitude: F64, radius: float) -> I64:
    """For each place, the index of the nearest vantage within `radius` km; -1 when none is (or no coordinates)."""
    best = np.full(len(latitude), -1, dtype=np.int64)
    if not vantages:
        return best
    distances = np.stack([_distance_km(latitude, longitude, v.location) for v in vantages], axis=1)
    distances = np.where(np.isnan(distances), np.inf, distances)
    nearest = distances.argmin(axis=1)
    return np.where(distances[np.arange(len(latitude)), nearest] <= radius, nearest, best)


def place_table(region_map: RegionMap, pool: model.Pool, usable: frozenset[int], evidence: PoolEvidence) -> npt.NDArray[np.int32]:
    """For each range value (ranking id + stride x rule): the encoded answer, country and vantage evidence folded in."""
    width = len(region_map.regions)
    geo = answer_table(region_map, usable).astype(np.int64)  # DISTANCE: kind 0, the region itself
    stride = region_map.stride
    allowed = np.zeros(width, dtype=bool)
    allowed[sorted(usable)] = True
    location = geo[:stride].copy()
    places = region_map.places
    columns = columns_of(evidence, pool)
    pending = np.ones(stride, dtype=bool)
    pending[0] = False  # the file order: no place, no country or vantage evidence
    pending &= location >= 0
    for code, figures in evidence.countries.items():
        ids = np.flatnonzero(pending & (places.country == code))
        if len(ids):
            _fold(region_map, ids, figures, columns, allowed, pool.latency, COUNTRY, location, pending)
    if evidence.vantages:
        ids = np.flatnonzero(pending)
        near = nearest_vantage(evidence.vantages, places.latitude[ids], places.longitude[ids], pool.latency.vantage_radius)
        for index, vantage in enumerate(evidence.vantages):
            chosen = ids[near == index]
            if len(chosen):
                figures = Figures(vantage.rtt, tuple(0 for _ in vantage.rtt))
                _fold(region_map, chosen, figures, columns, allowed, pool.latency, VANTAGE, location, pending)
    tables = [location]
    for rule, pinned in enumerate(region_map.rules, start=1):
        table = geo[stride * rule : stride * (rule + 1)]
        tables.append(location if next((r for r in pinned if r in usable), None) is None else table)
    return np.concatenate(tables).astype(np.int32)


def _fold(
    region_map: RegionMap,
    ids: I64,
    figures: Figures,
    columns: I64,
    allowed: BOOL,
    latency: model.Latency,
    kind: int,
    location: I64,
    pending: BOOL,
) -> None:
    rtt = pool_rtt(np.array([np.nan if r is None else r for r in figures.rtt], dtype=np.float64), columns)
    leader = np.full(len(ids), int(pool_leader(np.array([figures.leader]), columns)[0]), dtype=np.int64)
    answers, decided = _compose_places(region_map, ids, rtt, leader, allowed, latency)
    chosen = ids[decided]
    location[chosen] = answers[decided] + kind * len(region_map.regions)
    pending[chosen] = False


# --- networks spliced into the ranges ----------------------------------------------------


def _keys(ranges_hi: npt.NDArray[np.uint64], ranges_lo: npt.NDArray[np.uint64], width: int) -> npt.NDArray[np.generic]:
    """Sortable range starts: the address for IPv4, 16 big-endian bytes for IPv6."""
    if width == 32:
        return np.asarray(ranges_hi, dtype=np.uint64)
    pairs = np.ascontiguousarray(np.stack([ranges_hi, ranges_lo], axis=1).astype(">u8"))
    return pairs.view("S16").ravel()


def splice_networks(
    region_map: RegionMap,
    pool: model.Pool,
    table: NetworkTable,
    encoded: npt.NDArray[np.int32],
    allowed: BOOL,
    columns: I64,
) -> Ranges:
    """The region map's ranges of one family with answers for values (`encoded`, from place_table), and the
    networks of `table` laid in with answers composed from their own RTTs and each piece's place."""
    raw = region_map.v4 if table.version == 4 else region_map.v6
    width = raw.width
    base_values = np.where(raw.values >= 0, encoded[np.maximum(raw.values, 0)], raw.values).astype(np.int32, copy=False)
    if not len(table):
        return Ranges(width, raw.hi, raw.lo, base_values).merged()
    regions = len(region_map.regions)
    raw_keys = _keys(raw.hi, raw.lo, width)
    # Network boundaries all have a zero low half (IPv4 has none; an IPv6 /48 ends on a /64), so `hi` alone orders them.
    shift = (32 - V4_PREFIX) if width == 32 else (64 - V6_PREFIX)
    zeros = np.zeros(len(table), dtype=np.uint64)
    first_hi = table.keys << np.uint64(shift)
    first_keys = _keys(first_hi, zeros, width)
    last_keys = _keys(first_hi | np.uint64((1 << shift) - 1), zeros if width == 32 else zeros + np.uint64(MASK64), width)
    after = table.keys + np.uint64(1)
    after_hi = (after << np.uint64(shift))[after < np.uint64(1 << (V4_PREFIX if width == 32 else V6_PREFIX))]
    # Pieces: each network cut where a range of the map starts inside it.
    inner_first = np.searchsorted(raw_keys, first_keys, "right")
    inner_stop = np.searchsorted(raw_keys, last_keys, "right")
    counts = 1 + inner_stop - inner_first
    network = np.repeat(np.arange(len(table)), counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    position = np.arange(len(network)) - offsets
    raw_index = np.where(position == 0, inner_first[network] - 1, inner_first[network] + position - 1)
    piece_keys = np.where(position == 0, first_keys[network], raw_keys[np.maximum(raw_index, 0)])
    piece_raw = np.asarray(raw.values[np.maximum(raw_index, 0)], dtype=np.int64)
    piece_values = np.where(piece_raw >= 0, encoded[np.maximum(piece_raw, 0)], piece_raw).astype(np.int64)
    located = np.flatnonzero(piece_raw >= 0)  # an alias of the IPv4 tree keeps its IPv4 answer
    pinned_answer = np.full(len(region_map.rules) + 1, -1, dtype=np.int64)
    for rule, pinned in enumerate(region_map.rules, start=1):
        pinned_answer[rule] = next((r for r in pinned if allowed[r]), -1)
    stride = region_map.stride
    # A slice of the pieces at a time: the [pieces, regions] float64 temporaries of a million networks at once were
    # hundreds of MB at the build's peak, in the DNS worker.
    step = max(1, COMPOSE_CELLS // max(1, regions))
    for start in range(0, len(located), step):
        part = located[start : start + step]
        rows = network[part]
        values = piece_raw[part]
        ids, rules = values % stride, values // stride
        rtt = pool_rtt(table.rtt[rows], columns)
        leader = pool_leader(table.leader[rows], columns)
        answers, decided = _compose_places(region_map, ids, rtt, leader, allowed, pool.latency)
        ruled = pinned_answer[rules] >= 0  # a `networks` rule's region answers first: operator intent
        steered = decided & ~ruled
        piece_values[part[steered]] = answers[steered] + NETWORK * regions
    # New range starts: the networks' first addresses and the addresses after them, where no range starts yet.
    merged = np.sort(np.concatenate([first_hi, after_hi]), kind="stable")  # two sorted runs
    extra_hi = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
    extra_keys = _keys(extra_hi, np.zeros(len(extra_hi), dtype=np.uint64), width)
    at = np.searchsorted(raw_keys, extra_keys, "left")
    new = (at >= len(raw_keys)) | (raw_keys[np.minimum(at, len(raw_keys) - 1)] != extra_keys)
    extra_hi, at = extra_hi[new], at[new]
    hi = np.insert(raw.hi, at, extra_hi)
    lo = np.insert(raw.lo, at, np.zeros(len(at), dtype=np.uint64))
    # A new start continues the range it cuts (int32 positions: two million ranges' worth of int64 was 32 MB of the peak).
    spliced = base_values[np.insert(np.arange(len(raw_keys), dtype=np.int32), at, (at - 1).astype(np.int32))]
    spliced[np.searchsorted(_keys(hi, lo, width), piece_keys, "left")] = piece_values
    return Ranges(width, hi, lo, np.asarray(spliced, dtype=np.int32)).merged()


# --- the whole overlay -------------------------------------------------------------------


@dataclass(frozen=True)
class Steered:
    """A latency pool's answers for one set of usable regions and one PoolEvidence version."""

    answers: AnswerMap  # values: kind * regions + region
    resolvers: tuple[Mapping[int, int], Mapping[int, int]]  # IPv4, IPv6: resolver address -> encoded answer (no-ECS queries)
    networks: int = 0  # spliced in: what its memory grows with
    kinds: int = len(KINDS)


def steer(region_map: RegionMap, pool: model.Pool, usable: frozenset[int], evidence: PoolEvidence) -> Steered:
    """Every answer of a latency pool with evidence, as one AnswerMap (+ the resolver table)."""
    allowed = np.zeros(len(region_map.regions), dtype=bool)
    allowed[sorted(usable)] = True
    encoded = place_table(region_map, pool, usable, evidence)
    columns = columns_of(evidence, pool)
    v4 = splice_networks(region_map, pool, evidence.v4, encoded, allowed, columns)
    v6 = splice_networks(region_map, pool, evidence.v6, encoded, allowed, columns)
    answers = AnswerMap(region_map, encoded, (v4, v6), evidence.v4.keys)
    return Steered(answers, resolver_answers(region_map, pool, evidence, encoded, allowed, columns), evidence.networks)


def resolver_answers(
    region_map: RegionMap, pool: model.Pool, evidence: PoolEvidence, encoded: npt.NDArray[np.int32], allowed: BOOL, columns: I64
) -> tuple[dict[int, int], dict[int, int]]:
    """Answers for queries without ECS from resolvers with evidence, where it decides. A resolver whose own network
    has evidence is left to it (a network's own measurements are the stronger evidence)."""
    out: tuple[dict[int, int], dict[int, int]] = ({}, {})
    regions = len(region_map.regions)
    for version, found in ((4, out[0]), (6, out[1])):
        chosen = [(a, f) for a, f in evidence.resolvers.items() if a.version == version and evidence.table(version).row_of(a) is None]
        if not chosen:
            continue
        numbers = [int(a) for a, _ in chosen]
        upper = np.array([n if version == 4 else n >> 64 for n in numbers], dtype=np.uint64)
        values = range_values(region_map, version, upper)
        stride = region_map.stride
        rtt = pool_rtt(np.array([[np.nan if r is None else r for r in f.rtt] for _, f in chosen], dtype=np.float64), columns)
        leader = pool_leader(np.array([f.leader for _, f in chosen]), columns)
        answers, decided = _compose_places(region_map, values % stride, rtt, leader, allowed, pool.latency)
        rules = values // stride
        for row, number in enumerate(numbers):
            rule = int(rules[row])
            pinned = rule and any(allowed[r] for r in region_map.rules[rule - 1])
            if decided[row] and not pinned:
                found[number] = int(answers[row]) + RESOLVER * regions
    return out


def evidence_kind(encoded: int, regions: int) -> str:
    return KINDS[encoded // regions]


# --- explaining -----------------------------------------------------------------------------


def figures_text(evidence: PoolEvidence, figures: Figures, unit: str | None = "samples") -> str:
    """ "us-east 23 ms (214 samples), eu-west 84 ms (198)": the covered regions, fastest first."""
    covered = sorted(
        (rtt, name, count) for name, rtt, count in zip(evidence.regions, figures.rtt, figures.samples, strict=True) if rtt is not None
    )
    if unit is None:
        return ", ".join(f"{name} {rtt:.0f} ms" for rtt, name, _count in covered) or "no region measured"
    parts = [f"{name} {rtt:.0f} ms ({count}{' ' + unit if i == 0 else ''})" for i, (rtt, name, count) in enumerate(covered)]
    return ", ".join(parts) or "no region measured"


def evidence_figures(
    evidence: PoolEvidence,
    pool: model.Pool,
    kind: str,
    client: model.IPAddress,
    country: str | None,
    place: tuple[float, float] | None,
) -> tuple[str, Figures, str | None] | None:
    """The figures of `kind` (KINDS) that apply to this client, with a label and their sample unit; None: none do."""
    if kind == "network":
        table = evidence.table(client.version)
        row = table.row_of(client)
        if row is not None:
            network = ipaddress.ip_network((client, table.prefix), strict=False)
            return f"rum {network}", table.figures(row), "samples"
    elif kind == "resolver" and client in evidence.resolvers:
        return f"resolver {client}", evidence.resolvers[client], "samples"
    elif kind == "country" and country is not None and country in evidence.countries:
        figures = evidence.countries[country]
        return f"country {country} ({max(figures.samples, default=0)} networks)", figures, "networks"
    elif kind == "vantage" and place is not None and evidence.vantages:
        near = int(nearest_vantage(evidence.vantages, np.array([place[0]]), np.array([place[1]]), pool.latency.vantage_radius)[0])
        if near >= 0:
            vantage = evidence.vantages[near]
            label = f"vantage {vantage.instance} ({vantage.location[0]:g}, {vantage.location[1]:g})"
            return label, Figures(vantage.rtt, tuple(0 for _ in vantage.rtt)), None
    return None


def describe(
    evidence: PoolEvidence | None,
    pool: model.Pool,
    kind: str,
    client: model.IPAddress,
    country: str | None,
    place: tuple[float, float] | None,
) -> dict[str, object]:
    """What the evidence of `kind` (KINDS) said for this client, for explain: {"kind", "text", "rtt_ms": {region: ms}}."""
    found = None if evidence is None else evidence_figures(evidence, pool, kind, client, country, place)
    if evidence is None or found is None:
        return {"kind": "distance", "text": "distance", "rtt_ms": {}}
    label, figures, unit = found
    rtt = {name: value for name, value in zip(evidence.regions, figures.rtt, strict=True) if value is not None}
    return {"kind": kind, "text": f"{label}: {figures_text(evidence, figures, unit)}", "rtt_ms": rtt}
