"""(pool, family, client) -> GeoChoice from the pools' region maps and one HealthView. Pure; no per-client state.

A client costs one AnswerMap lookup whether or not it was seen before. AnswerMaps
depend on the map, the family and which regions may answer, not on the snapshot,
so a flap back to an earlier state finds its map again in the memo.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from geolb import model
from geolb.geo.rank import BUSY, FAIL_OPEN, READY
from geolb.geo.regionmap import AnswerMap, RegionMap, answer_table
from geolb.geo.select import Order, Rotation, region_order
from geolb.health.state import HealthView


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

    @property
    def failed_open(self) -> bool:
        return self.tier == FAIL_OPEN

    def endpoints(self, client: model.IPAddress, max_answers: int | None, rng: random.Random) -> tuple[model.Endpoint, ...]:
        if self.order is None:
            return ()
        return tuple(self.candidates[i] for i in self.order.indices(int(client), client.version, max_answers, rng))


class PoolFamily:
    """One pool's answers for one family under one HealthView: region per address, candidates and order per region."""

    def __init__(self, pool: model.Pool, family: int, health: HealthView, memo: AnswerMemo, maps: Mapping[str, RegionMap]) -> None:
        self.pool = pool
        self.family = family
        of_family = [tuple(e for e in r.endpoints if e.address.version == family) for r in pool.regions]
        up = [
            tuple(e for e in endpoints if health.is_up(pool.name, r.name, e)) for r, endpoints in zip(pool.regions, of_family, strict=True)
        ]
        ready = [
            tuple(e for e in endpoints if not health.is_busy(pool.name, r.name, e)) for r, endpoints in zip(pool.regions, up, strict=True)
        ]
        if any(ready):
            self.tier, chosen = READY, ready
        elif any(up):
            self.tier, chosen = BUSY, up
        else:
            self.tier, chosen = FAIL_OPEN, of_family
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
        self.answers = memo.answer_map(maps[pool.name], family, usable) if usable else None

    @property
    def failed_open(self) -> bool:
        return self.tier == FAIL_OPEN

    def choose(self, address: int, version: int) -> tuple[int, int]:
        """(region index, scope) for a client; only valid when `answers` is set. The scope holds for the order too."""
        assert self.answers is not None
        index, scope = self.answers.lookup(address, version)
        order = self.orders[index]
        return index, scope if order is None else max(scope, order.scope_floor(version))


class AnswerMemo:
    """What a process keeps across snapshots: AnswerMaps by (map, family, regions usable), a few ms each to
    build, and the round-robin positions (a health change must not restart every cycle)."""

    LIMIT = 64
    ROTATIONS = 65536

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._maps: OrderedDict[tuple[str, int, frozenset[int]], AnswerMap] = OrderedDict()
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

    def rotation(self, pool: str, region: str, family: int) -> Rotation:
        key = (pool, region, family)
        known = self._rotations.get(key)
        if known is None:
            if len(self._rotations) > self.ROTATIONS:
                self._rotations.clear()  # pools gone by reloads: start their cycles afresh
            known = self._rotations[key] = Rotation()
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
            known = self._pools[key] = PoolFamily(pool, family, self.health, self.memo, self.maps)
        return known

    def choose(self, pool: model.Pool, family: int, client: model.IPAddress) -> GeoChoice:
        chosen = self.pool_family(pool, family)
        if chosen.answers is None:
            return GeoChoice(pool.name, family, None, (), 0, chosen.tier)
        index, scope = chosen.choose(int(client), client.version)
        return GeoChoice(pool.name, family, pool.regions[index], chosen.candidates[index], scope, chosen.tier, chosen.orders[index])
