"""The snapshot: one publish is one generation, whatever changed together."""

from __future__ import annotations

from geolb import model
from geolb.health.state import ALL_UP, HealthView
from geolb.runtime import Runtime, Snapshot


def test_each_publish_is_one_generation_with_everything_that_changed() -> None:
    runtime = Runtime(model.EMPTY_ZONESET)
    seen: list[Snapshot] = []
    runtime.on_swap(seen.append)
    zones = model.ZoneSet(zones={}, pools={})
    health = HealthView(frozenset())
    snapshot = runtime.publish(zones=zones, health=health, maps={})
    assert [s.generation for s in seen] == [1]
    assert snapshot.zones is zones and snapshot.health is health
    runtime.publish(health=ALL_UP)
    assert [s.generation for s in seen] == [1, 2]
    assert seen[-1].zones is zones  # what did not change is carried over
    runtime.publish(health=health, generation=7)  # a worker takes the main process's number
    assert runtime.snapshot.generation == 7
