"""(pool, family, client) -> Decision, cached per client and per database network, with widened ECS scope."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

from geolb import model
from geolb.geo.rank import Decision, Location, answering_region, choose, rank_regions, scope_excluding
from geolb.health.state import HealthView

CACHE_LIMIT = 100_000  # decisions kept per generation; past it the cache starts over


class Locator(Protocol):
    description: str

    def locate(self, address: model.IPAddress) -> Location: ...

    def widest_scope(self, address: model.IPAddress, answer_of: Callable[[Location], Hashable], memo: dict[int, Hashable]) -> int: ...


class ScopeMemos:
    """Scope-widening verdicts per (pool, family, the pool's down endpoints), kept across snapshots.

    A health change in another pool, a reload that leaves a pool as it was, or a flap
    back to an earlier state finds its verdicts again instead of walking the tree anew.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._memos: OrderedDict[tuple[model.Pool, int, frozenset[tuple[str, model.IPAddress]]], dict[int, Hashable]] = OrderedDict()

    def memo(self, pool: model.Pool, family: int, health: HealthView) -> dict[int, Hashable]:
        down = frozenset((r.name, e.address) for r in pool.regions for e in r.endpoints if not health.is_up(pool.name, r.name, e))
        key = (pool, family, down)
        memo = self._memos.get(key)
        if memo is None:
            memo = self._memos[key] = {}
            while len(self._memos) > self.limit:
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(key)
        return memo


class GeoDecider:
    """Decisions for one snapshot (zones + health): made once per client, reused until the next swap.

    A new snapshot gets a new decider, so no cached decision outlives the zones and
    health it was made from.
    """

    def __init__(self, locator: Locator, health: HealthView, memos: ScopeMemos | None = None) -> None:
        self.locator = locator
        self.health = health
        self.scope_memos = memos or ScopeMemos()
        self._by_client: dict[tuple[str, int, model.IPAddress], Decision] = {}
        self._by_network: dict[tuple[str, int, model.IPNetwork], Decision] = {}
        self._memos: dict[tuple[str, int], dict[int, Hashable]] = {}

    def decide(self, pool: model.Pool, family: int, client: model.IPAddress) -> Decision:
        key = (pool.name, family, client)
        decision = self._by_client.get(key)
        if decision is None:
            decision = self._decide(pool, family, client)
            if len(self._by_client) >= CACHE_LIMIT:
                self._by_client.clear()
            self._by_client[key] = decision
        return decision

    def _decide(self, pool: model.Pool, family: int, client: model.IPAddress) -> Decision:
        location = self.locator.locate(client)
        ranking = rank_regions(pool, client, location)
        if ranking.rule == "networks":
            return choose(pool, client, location, ranking, family, self.health)
        # Every client in this database network ranks alike, so one decision serves them all.
        network_key = (pool.name, family, location.network)
        known = self._by_network.get(network_key)
        if known is not None:
            return dataclasses.replace(known, client=client)
        decision = choose(pool, client, location, ranking, family, self.health)
        if decision.region is not None:
            scope = self._widest_scope(pool, family, client)
            decision = dataclasses.replace(decision, ranking=dataclasses.replace(ranking, scope=scope))
        else:
            decision = dataclasses.replace(decision, ranking=dataclasses.replace(ranking, scope=0))
        if len(self._by_network) >= CACHE_LIMIT:
            self._by_network.clear()
        self._by_network[network_key] = decision
        return decision

    def _widest_scope(self, pool: model.Pool, family: int, client: model.IPAddress) -> int:
        """As short as the data allows: every network under it gets this answer, no rule inside it."""
        if len({r.name for r in pool.regions if any(e.address.version == family for e in r.endpoints)}) <= 1 and not pool.networks:
            return 0  # one region can answer this family: nothing depends on the client
        memo = self._memos.get((pool.name, family))
        if memo is None:
            memo = self._memos[(pool.name, family)] = self.scope_memos.memo(pool, family, self.health)
        health = self.health

        def answer_of(location: Location) -> Hashable:
            return answering_region(pool, location, family, health)

        widest = self.locator.widest_scope(client, answer_of, memo)
        return scope_excluding(client, widest, [rule.network for rule in pool.networks])
