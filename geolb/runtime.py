"""The live Snapshot (zones, health, region maps, generation): the one place that swaps what the DNS path reads."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from geolb import model
from geolb.geo.regionmap import RegionMap
from geolb.health.state import ALL_UP, HealthView
from geolb.steer.evidence import NO_EVIDENCE, Evidence


@dataclass(frozen=True)
class Snapshot:
    """Everything one query reads, taken once per query: never half a reload."""

    zones: model.ZoneSet
    health: HealthView
    maps: Mapping[str, RegionMap] = field(default_factory=lambda: MappingProxyType({}))  # pool name -> its region map
    generation: int = 0  # +1 on every swap; caches keyed on it never serve a stale answer
    evidence: Evidence = field(default_factory=lambda: NO_EVIDENCE)  # latency steering (SPEC §10): pool name -> its measured RTTs


class Runtime:
    """Holds the current Snapshot; reloads and health changes publish new ones here."""

    def __init__(self, zones: model.ZoneSet, health: HealthView = ALL_UP, maps: Mapping[str, RegionMap] | None = None) -> None:
        self.snapshot = Snapshot(zones, health, MappingProxyType(dict(maps or {})), 0)
        self._listeners: list[Callable[[Snapshot], None]] = []

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        """Call `listener` with every new snapshot (caches, workers, metrics)."""
        self._listeners.append(listener)

    def publish(
        self,
        *,
        zones: model.ZoneSet | None = None,
        health: HealthView | None = None,
        maps: Mapping[str, RegionMap] | None = None,
        generation: int | None = None,
        evidence: Evidence | None = None,
    ) -> Snapshot:
        """One new generation with whatever changed together (a reload brings zones, maps and health at once)."""
        current = self.snapshot
        snapshot = Snapshot(
            current.zones if zones is None else zones,
            current.health if health is None else health,
            current.maps if maps is None else MappingProxyType(dict(maps)),
            current.generation + 1 if generation is None else generation,
            current.evidence if evidence is None else MappingProxyType(dict(evidence)),
        )
        self.snapshot = snapshot
        for listener in self._listeners:
            listener(snapshot)
        return snapshot


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).

    A swap of steered maps frees tens of MB of numpy arrays and dicts; glibc keeps freed
    heap (and, after large frees, raises its mmap threshold so that later large arrays land
    on the heap too), so without this a worker's RSS only ever grows with the evidence."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return  # not glibc
    trim(0)


def settle_memory() -> None:
    """After start-up: move the long-lived zones and maps out of the cyclic collector's reach.

    Only once: objects frozen later and then dropped into a cycle would never be
    collected. Nothing on the query path grows with the client population any more,
    so later collections stay short without freezing again.
    """
    gc.collect()
    gc.freeze()
