"""The prober: every distinct check once per interval (with jitter), bounded concurrency, results into HealthState."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping

import aiohttp

from geolb import model
from geolb.health.probe import Outcome, probe, url_of
from geolb.health.state import HealthState, Transition

log = logging.getLogger("geolb.health")
JITTER = 0.1  # each interval is stretched or shrunk by up to 10 %, so checks drift apart


class Prober:
    """Runs on the server's event loop; the only writer of check results into `state`."""

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
        self.concurrency = concurrency
        self.sources = dict(sources or {})  # IP version -> the address checks leave from (--probe-source)
        self.observe = observe
        self.on_transition = on_transition
        self.rng = rng or random.Random()
        self.names: Mapping[model.HealthKey, list[str]] = {}
        self._sessions: dict[int, aiohttp.ClientSession] = {}  # by IP version: a source address is per connector
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[model.HealthKey, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for version in (4, 6):
            source = self.sources.get(version)
            connector = aiohttp.TCPConnector(
                limit=self.concurrency, force_close=True, ttl_dns_cache=None, local_addr=None if source is None else (source, 0)
            )
            self._sessions[version] = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

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
        await asyncio.gather(*(self._check(key) for key in keys))

    def schedule(self, keys: Iterable[model.HealthKey]) -> None:
        """Probe exactly these checks from now on; checks no zone uses any more stop."""
        wanted = set(keys)
        for key in list(self._tasks):
            if key not in wanted:
                self._tasks.pop(key).cancel()
        for key in wanted:
            if key not in self._tasks:
                self._tasks[key] = asyncio.get_running_loop().create_task(self._every_interval(key), name=f"probe {url_of(key)}")

    @property
    def scheduled(self) -> int:
        return len(self._tasks)

    async def _every_interval(self, key: model.HealthKey) -> None:
        interval = key.check.interval
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rng.uniform(0, interval))  # spread the first checks over one interval
        while True:
            started = loop.time()
            await self._check(key)
            period = interval * self.rng.uniform(1 - JITTER, 1 + JITTER)
            await asyncio.sleep(max(0.0, started + period - loop.time()))

    async def _check(self, key: model.HealthKey) -> None:
        assert self._sessions, "Prober.start() first"
        version = key.address.version
        async with self._slots:
            outcome = await probe(self._sessions[version], key, self.sources.get(version))
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
