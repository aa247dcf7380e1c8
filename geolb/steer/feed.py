"""Steering figures on the main process's loop: this instance's out to the cluster, its peers' in.

VantageFeed: check times in, this instance's vantage reports out, peers' reports in.
RumShare: this instance's RUM aggregates (RumStore.export) out after its own beacons, peers' merged in.

The VantageFeed owns a VantageBook (filled from the prober's outcomes when the instance has a
`--location`) and a VantageBoard (its own reports and, through cluster/member.py,
its peers'). Every VANTAGE_TICK it works out its own report per `steering: latency`
pool from the current snapshot's health, and when one moved enough (vantage.moved)
it goes on the board and to the cluster; whenever the board changes, `changed(pool)`
is called so that the server rebuilds the evidence (VantageBoard.attach).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from geolb import model
from geolb.health.probe import Outcome
from geolb.runtime import Snapshot
from geolb.steer.vantage import VantageBoard, VantageBook, VantageReport, moved

VANTAGE_TICK = 0.25  # seconds between looks at this instance's figures
EXPORT_SPACING = 0.25  # seconds at least between two exports of a pool's RUM aggregates ...
EXPORT_SHARE = 0.1  # ... and at most this share of the loop's time spent exporting (a million networks take a while)


class VantageFeed:
    def __init__(
        self,
        instance: str,
        location: tuple[float, float] | None,
        snapshot: Callable[[], Snapshot],
        changed: Callable[[str], None],
        publish: Callable[[str, VantageReport | None], None] | None = None,
    ) -> None:
        self.instance = instance
        self.location = location  # None: not a vantage point (peers' reports are still followed)
        self.snapshot = snapshot  # the current one: zones and health
        self.changed = changed  # the board changed for this pool: rebuild evidence
        self.publish = publish  # ClusterMember.publish_vantage, in a cluster
        self.book = VantageBook()
        self.board = VantageBoard()
        self._task: asyncio.Task[None] | None = None

    def observe(self, key: model.HealthKey, outcome: Outcome) -> None:
        """A check's outcome (Prober's observe hook): its time, when it succeeded."""
        if outcome.rtt is not None:
            self.book.record(key, outcome.rtt * 1000.0)

    def peer_report(self, instance: str, pool: str, report: VantageReport | None) -> None:
        """A peer's report changed (ClusterMember's on_vantage hook)."""
        if self.board.put(pool, instance, report):
            self.changed(pool)

    def start(self) -> None:
        if self.location is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vantage")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def zones_changed(self, zones: model.ZoneSet, checks: Iterable[model.HealthKey]) -> None:
        """A reload: forget the pools and checks gone, withdraw our reports of pools no longer steered by latency."""
        steered = {name for name, pool in zones.pools.items() if pool.steering == "latency"}
        for pool in self.board.pools_of(self.instance) - steered:
            self.board.put(pool, self.instance, None)
            if self.publish is not None:
                self.publish(pool, None)
        self.board.keep(zones.pools)
        self.book.forget(checks)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(VANTAGE_TICK)
            self.tick()

    def tick(self) -> None:
        """Own reports of the latency-steered pools, where they moved: onto the board and to the cluster."""
        if self.location is None:
            return
        snapshot = self.snapshot()
        for pool in snapshot.zones.pools.values():
            if pool.steering != "latency":
                continue
            vantage = self.book.vantage(pool, snapshot.health, self.instance, self.location)
            report: VantageReport | None = VantageReport.of(vantage, [r.name for r in pool.regions])
            if report is not None and not report.covered:
                report = None
            if not moved(self.board.report(pool.name, self.instance), report):
                continue
            if self.board.put(pool.name, self.instance, report):
                self.changed(pool.name)
            if self.publish is not None:
                self.publish(pool.name, report)


class RumExports(Protocol):
    """What RumShare needs of the RumStore (steer/aggregate.py)."""

    def export(self, pool_name: str) -> bytes: ...

    def merge(self, instance: str, pool_name: str, data: bytes | None) -> None: ...


class RumShare:
    """This instance's RUM aggregates to the cluster and its peers' into the store.

    Own beacons mark their pool; the pools marked are exported together at most every
    EXPORT_SPACING seconds (longer when exporting is slow, so that it takes at most
    EXPORT_SHARE of the loop), and handed to `publish` (ClusterMember.publish_rum, which
    sends only what differs from what etcd holds). A peer's export is merged into the
    store, and `changed` is called so that the server rebuilds that pool's evidence.
    """

    def __init__(self, store: RumExports, publish: Callable[[str, bytes | None], None], changed: Callable[[str], None]) -> None:
        self.store = store
        self.publish = publish
        self.changed = changed
        self._marked: set[str] = set()  # pools with own figures newer than their last export
        self._published: set[str] = set()  # pools exported at least once
        self._flush: asyncio.TimerHandle | None = None
        self._spacing = EXPORT_SPACING
        self._last = -EXPORT_SPACING  # time.monotonic() of the last export round

    def beacon_added(self, pool: str) -> None:
        """Own figures of `pool` changed (a beacon, or measurements loaded at start): export them soon."""
        self._marked.add(pool)
        if self._flush is None:
            delay = max(0.0, self._last + self._spacing - time.monotonic())
            self._flush = asyncio.get_running_loop().call_later(delay, self._export)

    def peer_rum(self, instance: str, pool: str, data: bytes | None) -> None:
        """A peer's export of `pool` (None: it is gone) (ClusterMember's on_rum hook)."""
        self.store.merge(instance, pool, data)
        self.changed(pool)

    def keep(self, pools: Iterable[str]) -> None:
        """A reload: withdraw our exports of the pools not in `pools`."""
        wanted = set(pools)
        for pool in self._published - wanted:
            self.publish(pool, None)
        self._published &= wanted
        self._marked &= wanted

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def _export(self) -> None:
        self._flush = None
        started = time.monotonic()
        marked, self._marked = sorted(self._marked), set()
        for pool in marked:
            self.publish(pool, self.store.export(pool) or None)  # b"": nothing measured in that pool
        self._published.update(marked)
        took = time.monotonic() - started
        self._last = started
        self._spacing = max(EXPORT_SPACING, took / EXPORT_SHARE)
