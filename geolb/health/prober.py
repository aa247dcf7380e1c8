"""The prober: every distinct check once per interval (with jitter) from a timer wheel, results into HealthState."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping

from geolb import model
from geolb.health.httpcheck import CheckTarget, HttpChecker
from geolb.health.probe import Outcome, parse_load, probe, url_of
from geolb.health.state import HealthState, Transition
from geolb.limits import raise_descriptor_limit

log = logging.getLogger("geolb.health")
JITTER = 0.1  # each interval is stretched or shrunk by up to 10 %, so checks drift apart
TICK = 0.01  # seconds: the schedule's resolution, and how late a timeout may be noticed
SPARE_DESCRIPTORS = 1024  # kept for DNS over TCP, the API, etcd and zone files


def idle_budget() -> int:
    """How many check connections may stay open between checks: the descriptor limit raised to its
    hard maximum, less a reserve. Targets past the budget get a new connection per check."""
    return max(0, raise_descriptor_limit() - SPARE_DESCRIPTORS)


class Scheduled:
    """A target on the schedule: its key, the checker's state for it, and its slot on the wheel."""

    __slots__ = ("key", "slot", "target", "wanted")

    def __init__(self, key: model.HealthKey, target: CheckTarget | None) -> None:
        self.key = key
        self.target = target  # http/https: what the fast path needs; None: tcp and none checks
        self.slot: int | None = None  # None while its check is under way
        self.wanted = True  # False once schedule() drops it


class Prober:
    """Runs on the main process's loop (DNS is answered by the workers); the only writer of check results into `state`."""

    def __init__(
        self,
        state: HealthState,
        publish: Callable[[], None],
        *,
        sources: Mapping[int, str] | None = None,
        concurrency: int = 256,
        observe: Callable[[model.HealthKey, Outcome], None] | None = None,
        on_transition: Callable[[Transition], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.state = state
        self.publish = publish  # called after a state change: swap in the new HealthView
        self.sources = dict(sources or {})  # IP version -> the address checks leave from (--probe-source)
        self.observe = observe
        self.on_transition = on_transition
        self.rng = rng or random.Random()
        self.names: Mapping[model.HealthKey, list[str]] = {}
        self.http = HttpChecker(self.sources, max_idle=idle_budget())
        self._slots = asyncio.Semaphore(concurrency)
        self._entries: dict[model.HealthKey, Scheduled] = {}  # what schedule() was last given
        self._wheel: dict[int, list[Scheduled]] = {}  # tick -> targets due then (stale entries skipped)
        self._ticker: asyncio.TimerHandle | None = None
        self._tick = 0  # the last tick handled
        self._running: dict[model.HealthKey, asyncio.Task[None]] = {}  # checks on the full (coroutine) path

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for entry in self._entries.values():
            entry.wanted = False
        self._entries.clear()
        self._wheel.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        self.http.close()

    def describe(self, zones: model.ZoneSet) -> None:
        """Learn which pool/region endpoints each check serves, for the logs."""
        names: dict[model.HealthKey, list[str]] = {}
        for pool in zones.pools.values():
            for region in pool.regions:
                for endpoint in region.endpoints:
                    names.setdefault(endpoint.key, []).append(f"{pool.name}/{region.name}")
        self.names = names

    async def check_once(self, keys: Iterable[model.HealthKey]) -> None:
        """One round for `keys`, together; bounded by their timeouts. Their first results set their states."""
        await asyncio.gather(*(self._check_in_slot(key) for key in keys))

    def schedule(self, keys: Iterable[model.HealthKey]) -> None:
        """Probe exactly these checks from now on; checks no zone uses any more stop."""
        wanted = set(keys)
        loop = asyncio.get_running_loop()
        for key in set(self._entries) - wanted:
            self._entries.pop(key).wanted = False
            task = self._running.pop(key, None)
            if task is not None:
                task.cancel()
        now = time.monotonic()
        self.http.forget(wanted)
        for key in wanted - set(self._entries):
            target = self.http.target(key) if key.check.type in ("http", "https") else None
            entry = self._entries[key] = Scheduled(key, target)
            # The first checks spread over one interval, so that thousands never fire together.
            self._wait(entry, now + self.rng.uniform(0, key.check.interval))
        if self._ticker is None and wanted:
            self._tick = int(now / TICK)
            self._ticker = loop.call_at(loop.time() + TICK, self._on_tick)

    @property
    def scheduled(self) -> int:
        return len(self._entries)

    # Scheduled checks wait on a wheel of TICK-long slots, then run as a FastCheck (callbacks
    # on a kept-alive connection) or a task on the full path; either way they end in
    # _finished(), which records the result and puts the target back on the wheel one
    # interval (with jitter) after this check started. One timer for the whole wheel: the
    # checks due in a slot go out together, in one turn of the loop, and so do their answers.

    def _wait(self, entry: Scheduled, when: float) -> None:
        entry.slot = max(int(when / TICK) + 1, self._tick + 1)
        self._wheel.setdefault(entry.slot, []).append(entry)

    def _on_tick(self) -> None:
        loop = asyncio.get_running_loop()
        now_slot = int(time.monotonic() / TICK)
        while self._tick < now_slot:
            self._tick += 1
            for entry in self._wheel.pop(self._tick, ()):
                if entry.wanted and entry.slot == self._tick:
                    entry.slot = None
                    self._due(entry)
        self.http.expire(time.monotonic())
        self._ticker = loop.call_at(loop.time() + TICK, self._on_tick) if self._entries or self._running else None

    def _due(self, entry: Scheduled) -> None:
        started = time.monotonic()
        if entry.target is not None and self.http.start(entry.target, functools.partial(self._fast_done, entry, started)):
            return
        self._run_full(entry, started)

    def _fast_done(self, entry: Scheduled, started: float, error: str | None, load: str | None, hand_back: bool) -> None:
        if hand_back:
            self._run_full(entry, started)
        else:
            answered = entry.target.answered if entry.target is not None else 0.0
            rtt = answered - started if error is None and answered >= started else None
            self._finished(entry, started, Outcome(error is None, time.monotonic() - started, error, parse_load(load), rtt))

    def _run_full(self, entry: Scheduled, started: float) -> None:
        key = entry.key
        self._running[key] = asyncio.get_running_loop().create_task(self._full(entry, started), name=f"probe {url_of(key)}")

    async def _full(self, entry: Scheduled, started: float) -> None:
        key = entry.key
        outcome = await probe(self.http, key, self.sources.get(key.address.version))
        self._running.pop(key, None)
        self._finished(entry, started, outcome)

    def _finished(self, entry: Scheduled, started: float, outcome: Outcome) -> None:
        self._record(entry.key, outcome)
        if entry.wanted and entry.slot is None:
            self._wait(entry, started + entry.key.check.interval * self.rng.uniform(1 - JITTER, 1 + JITTER))

    async def _check_in_slot(self, key: model.HealthKey) -> None:
        """A check of a round that starts thousands at once: at most `concurrency` connect together."""
        async with self._slots:
            self._record(key, await probe(self.http, key, self.sources.get(key.address.version)))

    def _record(self, key: model.HealthKey, outcome: Outcome) -> None:
        if self.observe is not None:
            self.observe(key, outcome)
        transition = self.state.record(key, outcome.ok, outcome.error, outcome.latency, time.time(), outcome.load)
        if transition is None and self.state.changed:
            self.publish()  # a load report that changed weights or busy states
        if transition is not None:
            where = ", ".join(self.names.get(key, [])) or "no pool"
            state = "up" if transition.up else "down"
            log.warning("%s %s (%s): %s", url_of(key), state, where, transition.reason)
            if self.on_transition is not None:
                self.on_transition(transition)
            self.publish()
