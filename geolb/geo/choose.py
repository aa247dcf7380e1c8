"""(pool, family, client) -> GeoChoice from the pools' region maps and one HealthView. Pure; no per-client state.

A client costs one AnswerMap lookup whether or not it was seen before. AnswerMaps
depend on the map, the family and which regions are alive, not on the snapshot,
so a flap back to an earlier state finds its map again in the memo.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from geolb import model
from geolb.geo.regionmap import AnswerMap, RegionMap, answer_table
from geolb.geo.select import weighted_order
from geolb.health.state import HealthView


@dataclass(frozen=True)
class GeoChoice:
    """The region a GEO answer comes from, its endpoints eligible to answer, and the ECS scope that holds."""

    pool: str
    family: int  # 4 or 6
    region: model.Region | None  # None: the pool has no endpoint of this family (NODATA)
    candidates: tuple[model.Endpoint, ...]
    scope: int
    failed_open: bool

    def endpoints(self, rng: random.Random, max_answers: int | None) -> tuple[model.Endpoint, ...]:
        return weighted_order(self.candidates, max_answers, rng)


class PoolFamily:
    """One pool's answers for one family under one HealthView: region per address, candidates per region."""

    def __init__(self, pool: model.Pool, family: int, answers: AnswerMap | None, health: HealthView, failed_open: bool) -> None:
        self.pool = pool
        self.family = family
        self.answers = answers  # None: no endpoint of the family in the pool
        self.failed_open = failed_open
        candidates = []
        for region in pool.regions:
            of_family = tuple(e for e in region.endpoints if e.address.version == family)
            healthy = tuple(e for e in of_family if health.is_up(pool.name, region.name, e))
            candidates.append(of_family if failed_open else healthy)
        self.candidates: tuple[tuple[model.Endpoint, ...], ...] = tuple(candidates)

    def choose(self, address: int, version: int) -> tuple[int, int]:
        """(region index, scope) for a client; only valid when `answers` is set."""
        assert self.answers is not None
        return self.answers.lookup(address, version)


class AnswerMemo:
    """AnswerMaps by (map, family, regions alive), kept across snapshots (a few ms each to build)."""

    LIMIT = 64

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._maps: OrderedDict[tuple[str, int, frozenset[int], frozenset[int]], tuple[AnswerMap, bool]] = OrderedDict()

    def get(self, region_map: RegionMap, family: int, alive: frozenset[int], answerable: frozenset[int]) -> tuple[AnswerMap, bool]:
        key = (region_map.key, family, alive, answerable)
        known = self._maps.get(key)
        if known is None:
            table, failed_open = answer_table(region_map, alive, answerable)
            known = self._maps[key] = (AnswerMap(region_map, table), failed_open)
            while len(self._maps) > self.limit:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(key)
        return known


class GeoAnswers:
    """Choices for one snapshot (zones, health, maps)."""

    def __init__(self, maps: Mapping[str, RegionMap], health: HealthView, memo: AnswerMemo | None = None) -> None:
        self.maps = maps
        self.health = health
        self.memo = memo or AnswerMemo()
        self._pools: dict[tuple[str, int], PoolFamily] = {}

    def pool_family(self, pool: model.Pool, family: int) -> PoolFamily:
        key = (pool.name, family)
        known = self._pools.get(key)
        if known is None:
            answerable = frozenset(i for i, r in enumerate(pool.regions) if any(e.address.version == family for e in r.endpoints))
            if not answerable:
                known = PoolFamily(pool, family, None, self.health, False)
            else:
                alive = frozenset(
                    i
                    for i, r in enumerate(pool.regions)
                    if any(e.address.version == family and self.health.is_up(pool.name, r.name, e) for e in r.endpoints)
                )
                answers, failed_open = self.memo.get(self.maps[pool.name], family, alive, answerable)
                known = PoolFamily(pool, family, answers, self.health, failed_open)
            self._pools[key] = known
        return known

    def choose(self, pool: model.Pool, family: int, client: model.IPAddress) -> GeoChoice:
        chosen = self.pool_family(pool, family)
        if chosen.answers is None:
            return GeoChoice(pool.name, family, None, (), 0, False)
        index, scope = chosen.choose(int(client), client.version)
        return GeoChoice(pool.name, family, pool.regions[index], chosen.candidates[index], scope, chosen.failed_open)
