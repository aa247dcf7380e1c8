"""(pool, family, client) -> GeoChoice from the pools' region maps and one HealthView. Pure; no per-client state.

A client costs one AnswerMap lookup whether or not it was seen before. AnswerMaps
depend on the map, the family and which regions may answer, not on the snapshot,
so a flap back to an earlier state finds its map again in the memo. A pool with
`steering: latency` and evidence gets a Steered AnswerMap (steer/overlay.py) instead,
keyed also on the evidence's version; its values carry the evidence kind.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from geolb import model
from geolb.geo.rank import BUSY, FAIL_OPEN, READY
from geolb.geo.regionmap import AnswerMap, RegionMap, answer_table
from geolb.geo.select import Order, Rotation, region_order
from geolb.health.state import HealthView
from geolb.steer.evidence import NO_EVIDENCE, Evidence, PoolEvidence
from geolb.steer.overlay import KINDS, Steered, steer


@dataclass(frozen=True)
class GeoChoice:
    """The region a GEO answer comes from, its endpoints eligible to answer, and the ECS scope that holds."""

    pool: str
    family: int  # 4 or 6
    region: model.Region | None  # None: the pool has no endpoint of this family (NODATA)
    candidates: tuple[model.Endpoint, ...]
    scope: int
    tier: str  # READY, BUSY or FAIL_OPEN
    order: Order | None = None
    evidence: str = "distance"  # what ordered the regions (steer.overlay.KINDS): network, resolver, country, vantage, distance

    @property
    def failed_open(self) -> bool:
        return self.tier == FAIL_OPEN

    def endpoints(self, client: model.IPAddress, max_answers: int | None, rng: random.Random) -> tuple[model.Endpoint, ...]:
        if self.order is None:
            return ()
        return tuple(self.candidates[i] for i in self.order.indices(int(client), client.version, max_answers, rng))


def answering_endpoints(pool: model.Pool, family: int, health: HealthView) -> tuple[str, list[tuple[model.Endpoint, ...]]]:
    """(tier, per region the endpoints that may answer): SPEC §3 rules 3, 4 and 7."""
    of_family = [tuple(e for e in r.endpoints if e.address.version == family) for r in pool.regions]
    up = [tuple(e for e in endpoints if health.is_up(pool.name, r.name, e)) for r, endpoints in zip(pool.regions, of_family, strict=True)]
    ready = [tuple(e for e in endpoints if not health.is_busy(pool.name, r.name, e)) for r, endpoints in zip(pool.regions, up, strict=True)]
    if any(ready):
        return READY, ready
    if any(up):
        return BUSY, up
    return FAIL_OPEN, of_family


class PoolFamily:
    """One pool's answers for one family under one HealthView: region per address, candidates and order per region."""

    def __init__(
        self,
        pool: model.Pool,
        family: int,
        health: HealthView,
        memo: AnswerMemo,
        maps: Mapping[str, RegionMap],
        evidence: PoolEvidence | None = None,
    ) -> None:
        self.pool = pool
        self.family = family
        self.width = len(pool.regions)  # answers are `kind * width + region` (kinds: 1 without evidence)
        self.kinds = 1
        self.resolvers: tuple[Mapping[int, int], Mapping[int, int]] = ({}, {})
        self.tier, chosen = answering_endpoints(pool, family, health)
        self.candidates: tuple[tuple[model.Endpoint, ...], ...] = tuple(chosen)
        self.orders: tuple[Order | None, ...] = tuple(
            None
            if not endpoints
            else region_order(
                region,
                endpoints,
                [health.load(pool.name, region.name, e) for e in endpoints],
                memo.rotation(pool.name, region.name, family) if region.selection.policy == "round-robin" else None,
            )
            for region, endpoints in zip(pool.regions, chosen, strict=True)
        )
        usable = frozenset(i for i, endpoints in enumerate(chosen) if endpoints)
        # None: no endpoint of the family in the pool
        self.answers: AnswerMap | None = None
        if usable and evidence is not None and pool.steering == "latency":
            steered = memo.steered(maps[pool.name], pool, usable, evidence)
            self.answers, self.resolvers, self.kinds = steered.answers, steered.resolvers, steered.kinds
        elif usable:
            self.answers = memo.answer_map(maps[pool.name], family, usable)

    @property
    def failed_open(self) -> bool:
        return self.tier == FAIL_OPEN

    def choose(self, address: int, version: int) -> tuple[int, int]:
        """(answer, scope) for a client; only valid when `answers` is set. The scope holds for the order too.
        The answer is `kind * width + region index` (just the region index for a pool without evidence)."""
        assert self.answers is not None
        index, scope = self.answers.lookup(address, version)
        order = self.orders[index % self.width]
        return index, scope if order is None else max(scope, order.scope_floor(version))

    def choose_resolver(self, address: int, version: int) -> int | None:
        """The answer for a query without ECS from a resolver with evidence of its own, else None."""
        return self.resolvers[version == 6].get(address)


class AnswerMemo:
    """What a process keeps across snapshots: AnswerMaps by (map, family, regions usable), a few ms each to
    build, and the round-robin positions (a health change must not restart every cycle)."""

    LIMIT = 64
    STEERED = 4  # AnswerMaps with networks spliced in: tens of MB each with a million networks ...
    STEERED_NETWORKS = 4_000_000  # ... so those kept hold at most this many networks together (the newest always kept)
    ROTATIONS = 65536

    def __init__(self, limit: int = LIMIT, steered: int = STEERED) -> None:
        self.limit = limit
        self.steered_limit = steered
        self._maps: OrderedDict[tuple[str, int, frozenset[int]], AnswerMap] = OrderedDict()
        self._steered: OrderedDict[tuple[object, ...], Steered] = OrderedDict()
        self._needed: frozenset[tuple[object, ...]] = frozenset()
        self._rotations: dict[tuple[str, str, int], Rotation] = {}

    def answer_map(self, region_map: RegionMap, family: int, usable: frozenset[int]) -> AnswerMap:
        key = (region_map.key, family, usable)
        known = self._maps.get(key)
        if known is None:
            known = self._maps[key] = AnswerMap(region_map, answer_table(region_map, usable))
            while len(self._maps) > self.limit:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(key)
        return known

    def steered(self, region_map: RegionMap, pool: model.Pool, usable: frozenset[int], evidence: PoolEvidence) -> Steered:
        """A latency pool's answers with its evidence laid over; the family counts only through `usable`."""
        key = steered_key(region_map, pool, usable, evidence)
        known = self._steered.get(key)
        if known is None:
            known = steer(region_map, pool, usable, evidence)
            self.add_steered(key, known)
        else:
            self._steered.move_to_end(key)
        return known

    def has_steered(self, key: tuple[object, ...]) -> bool:
        return key in self._steered

    def add_steered(self, key: tuple[object, ...], steered: Steered) -> None:
        """Keep a Steered map (built here or ahead, off the query path), dropping the least recently used beyond the bounds."""
        self._steered[key] = steered
        self._steered.move_to_end(key)
        # A map of an older evidence version of this pool is never asked for again (versions only move on): drop it
        # now rather than keep up to `steered_limit` of them, each as large as the newest, while evidence grows.
        pool_name, version = key[4], key[5]
        for stale in [k for k in self._steered if k[4] == pool_name and k[5] != version and k not in self._needed]:
            del self._steered[stale]
        networks = sum(s.networks for s in self._steered.values())
        # The maps of the state being installed are never dropped (a query would then build one on the DNS loop);
        # beyond them, the least recently used go first.
        for old in [k for k in self._steered if k not in self._needed and k != key]:
            if len(self._steered) <= self.steered_limit and networks <= self.STEERED_NETWORKS:
                break
            networks -= self._steered.pop(old).networks

    def need(self, keys: Collection[tuple[object, ...]]) -> None:
        """The Steered maps the state about to be installed answers from: kept whatever the bounds."""
        self._needed = frozenset(keys)

    def rotation(self, pool: str, region: str, family: int) -> Rotation:
        key = (pool, region, family)
        known = self._rotations.get(key)
        if known is None:
            if len(self._rotations) > self.ROTATIONS:
                self._rotations.clear()  # pools gone by reloads: start their cycles afresh
            known = self._rotations[key] = Rotation()
        return known


def steered_key(region_map: RegionMap, pool: model.Pool, usable: frozenset[int], evidence: PoolEvidence) -> tuple[object, ...]:
    """What a Steered map depends on: the map, the pool's regions and latency settings, the usable regions, the evidence."""
    return (region_map.key, tuple(r.name for r in pool.regions), pool.latency, usable, evidence.pool, evidence.version)


@dataclass(frozen=True)
class SteerJob:
    """One Steered map a state will need, to build ahead (pure numpy: a worker runs it in a thread, off its loop)."""

    key: tuple[object, ...]
    region_map: RegionMap
    pool: model.Pool
    usable: frozenset[int]
    evidence: PoolEvidence

    def run(self) -> Steered:
        return steer(self.region_map, self.pool, self.usable, self.evidence)


def steer_jobs(
    memo: AnswerMemo, zones: model.ZoneSet, maps: Mapping[str, RegionMap], health: HealthView, evidence: Evidence
) -> list[SteerJob]:
    """The Steered maps that answering with (zones, maps, health, evidence) needs and `memo` lacks."""
    jobs: dict[tuple[object, ...], SteerJob] = {}
    needed: set[tuple[object, ...]] = set()
    for name, pool_evidence in evidence.items():
        pool = zones.pools.get(name)
        region_map = maps.get(name)
        if pool is None or region_map is None or pool.steering != "latency":
            continue
        for family in (4, 6):
            _tier, chosen = answering_endpoints(pool, family, health)
            usable = frozenset(i for i, endpoints in enumerate(chosen) if endpoints)
            key = steered_key(region_map, pool, usable, pool_evidence)
            if usable:
                needed.add(key)
                if not memo.has_steered(key):
                    jobs[key] = SteerJob(key, region_map, pool, usable, pool_evidence)
    memo.need(needed)
    return list(jobs.values())


class GeoAnswers:
    """Choices for one snapshot (zones, health, maps, evidence)."""

    def __init__(
        self, maps: Mapping[str, RegionMap], health: HealthView, memo: AnswerMemo | None = None, evidence: Evidence = NO_EVIDENCE
    ) -> None:
        self.maps = maps
        self.health = health
        self.memo = memo or AnswerMemo()
        self.evidence = evidence
        self._pools: dict[tuple[str, int], PoolFamily] = {}

    def pool_family(self, pool: model.Pool, family: int) -> PoolFamily:
        key = (pool.name, family)
        known = self._pools.get(key)
        if known is None:
            evidence = self.evidence.get(pool.name) if pool.steering == "latency" else None
            known = self._pools[key] = PoolFamily(pool, family, self.health, self.memo, self.maps, evidence)
        return known

    def choose(self, pool: model.Pool, family: int, client: model.IPAddress, resolver: bool = False) -> GeoChoice:
        """`resolver`: the client is the query's source (no ECS), so resolver evidence may apply."""
        chosen = self.pool_family(pool, family)
        if chosen.answers is None:
            return GeoChoice(pool.name, family, None, (), 0, chosen.tier)
        found = chosen.choose_resolver(int(client), client.version) if resolver and chosen.kinds > 1 else None
        if found is None:
            found, scope = chosen.choose(int(client), client.version)
        else:
            scope = 0  # a resolver's answer is not the client's: there is no client subnet to scope
        index, kind = found % chosen.width, found // chosen.width
        return GeoChoice(
            pool.name, family, pool.regions[index], chosen.candidates[index], scope, chosen.tier, chosen.orders[index], KINDS[kind]
        )
