"""DNS worker processes on SO_REUSEPORT sockets (`--workers N`, at least one), fed whole generations by the main process.

DNS is always answered by workers: the main process keeps the prober, the cluster,
the HTTP API and reloads, so that thousands of checks a second never delay an
answer. Every snapshot it publishes (a reload, a health change, a forced state)
goes down a socketpair to each worker as one generation message: health always,
zones and latency evidence only when they changed, region maps as cache keys the worker
memory-maps. Workers send up the lookups of RUM tokens they answered (resolver discovery)
in batches.
Snapshots published while one is on its way collapse into the newest. A worker
swaps the generation in before its next query and acknowledges it, so the API can
answer a change only once every worker answers with it. A worker that dies is started
again in its place with the newest generation (backing off while it keeps dying).
"""

from __future__ import annotations

import asyncio
import copyreg
import itertools
import logging
import multiprocessing
import multiprocessing.process
import pickle
import signal
import socket
import time
import types
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geolb import model
from geolb.dns.ratelimit import RateLimits
from geolb.errors import GeolbError
from geolb.eventloop import loop_factory
from geolb.geo.choose import SteerJob
from geolb.geo.store import MapStore
from geolb.handler import QueryHandler, QueryStats
from geolb.health.state import HealthView
from geolb.ipc import Channel, ChannelClosed
from geolb.limits import raise_descriptor_limit
from geolb.net.listeners import DnsListeners, HostPort
from geolb.net.tcp import TcpLimits
from geolb.runtime import Runtime, Snapshot, release_freed_memory, settle_memory
from geolb.steer.evidence import Evidence
from geolb.steer.overlay import Steered
from geolb.steer.tokens import Sighting

log = logging.getLogger("geolb.workers")
START_TIMEOUT = 60.0
STATS_TIMEOUT = 2.0
RESPAWN_BACKOFF_FIRST = 1.0  # a worker that dies again soon after a respawn waits this long, doubling
RESPAWN_BACKOFF_MAX = 30.0
RESPAWN_STABLE = 30.0  # a respawned worker up this long died by accident, not by a fault in starting: respawn at once
CLEAN_EXIT_GRACE = 0.5  # a worker that exited 0 was sent SIGTERM: the whole group may be stopping (systemd)
DRAIN_TIMEOUT = 5.0
SIGNATURE_SWEEP = 60.0  # how often a worker drops ready packets whose signatures are due for a refresh
SIGHTINGS_INTERVAL = 0.1  # a worker sends the RUM token lookups it answered at most this often


def _mappingproxy(items: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(items)


def _reduce_mappingproxy(proxy: types.MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _mappingproxy, (dict(proxy),)


# The model's read-only mappings travel to workers as the dicts they wrap.
copyreg.pickle(types.MappingProxyType, _reduce_mappingproxy)


@dataclass(frozen=True)
class WorkerConfig:
    listen: tuple[HostPort, ...]  # with the ports the main process found free
    cache_dir: str  # where the main process saved the region maps
    tcp: TcpLimits
    fast_path: bool
    log_level: int
    nsid: bytes | None = None  # the NSID option's data (RFC 5001); None: not sent
    cookie_secrets: tuple[bytes, ...] = ()  # the first makes server cookies, all check them; the same in every worker
    rate_limits: RateLimits | None = None  # UDP response rate limiting; None: off
    rum_addresses: tuple[model.IPAddress, ...] = ()  # what "<token>.<rum_name>" answers (--rum-address)


@dataclass(frozen=True)
class Generation:
    """One snapshot as a worker receives it: zones only when they changed, maps by cache key."""

    number: int
    zones: model.ZoneSet | None
    health: HealthView
    map_keys: Mapping[str, str] | None  # pool -> RegionMap key; None: unchanged
    evidence: Evidence | None = None  # latency steering (SPEC §10); None: unchanged


def whole_generation(snapshot: Snapshot) -> Generation:
    """Everything a worker that has nothing yet needs."""
    return Generation(snapshot.generation, snapshot.zones, snapshot.health, map_keys(snapshot), snapshot.evidence)


def map_keys(snapshot: Snapshot) -> dict[str, str]:
    return {pool: region_map.key for pool, region_map in snapshot.maps.items()}


def worker_main(sock: socket.socket, config: WorkerConfig) -> None:
    """Entry point of a worker process: wait for the first generation, then serve until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the main process decides
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(sock, config))


async def _serve(sock: socket.socket, config: WorkerConfig) -> None:
    loop = asyncio.get_running_loop()
    channel = await Channel.open(sock)
    try:
        message = await channel.recv()
    except ChannelClosed:
        return  # the main process gave up before it had a snapshot for us
    if message[0] != "generation":
        return
    first: Generation = message[1]
    store = MapStore(config.cache_dir)

    def maps_of(keys: Mapping[str, str]) -> dict[str, Any]:
        maps = {pool: store.load(key) for pool, key in keys.items()}
        store.retain(set(keys.values()))
        return maps

    assert first.zones is not None and first.map_keys is not None
    runtime = Runtime(first.zones, first.health, maps_of(first.map_keys))
    evidence = first.evidence if first.evidence is not None else runtime.snapshot.evidence
    runtime.snapshot = Snapshot(runtime.snapshot.zones, runtime.snapshot.health, runtime.snapshot.maps, first.number, evidence)
    limit = raise_descriptor_limit()
    if limit < config.tcp.max_connections + 64:
        log.warning("open-file limit %d is below --tcp-max-connections %d: raise it (ulimit -n)", limit, config.tcp.max_connections)
    handler = QueryHandler(
        runtime,
        fast_path=config.fast_path,
        nsid=config.nsid,
        cookie_secrets=config.cookie_secrets,
        rate_limits=config.rate_limits,
        rum_addresses=config.rum_addresses,
    )
    first_jobs = handler.steer_jobs(runtime.snapshot.zones, runtime.snapshot.maps, runtime.snapshot.health, runtime.snapshot.evidence)
    handler.adopt_steered(first_jobs, _build(first_jobs))  # before the first query: nothing is answered yet
    release_freed_memory()  # what the build needed at its peak
    listeners = DnsListeners(handler, config.tcp)
    try:
        await listeners.start(config.listen)
    except GeolbError as exc:
        await channel.send(("error", str(exc)))
        return
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def follow() -> None:
        while True:
            try:
                message = await channel.recv()
            except ChannelClosed:
                break  # the main process is gone
            kind = message[0]
            if kind == "generation":
                generation: Generation = message[1]
                maps = None if generation.map_keys is None else maps_of(generation.map_keys)
                current = runtime.snapshot
                jobs = handler.steer_jobs(
                    current.zones if generation.zones is None else generation.zones,
                    current.maps if maps is None else maps,
                    generation.health,
                    current.evidence if generation.evidence is None else generation.evidence,
                )
                if jobs:  # latency pools' maps for the new state, built while the current one keeps answering
                    handler.adopt_steered(jobs, await asyncio.to_thread(_build, jobs))
                runtime.publish(
                    zones=generation.zones, health=generation.health, maps=maps, generation=generation.number, evidence=generation.evidence
                )
                await channel.send(("ack", generation.number))
                if jobs:  # the state replaced held the previous maps: give their memory back (milliseconds, off the loop)
                    await asyncio.to_thread(release_freed_memory)
            elif kind == "stats":
                await channel.send(("stats", message[1], handler.fold_stats()))
            elif kind == "stop":
                break
        stop.set()

    async def expire_signatures() -> None:
        while True:
            await asyncio.sleep(SIGNATURE_SWEEP)
            handler.expire_signatures(time.time())

    async def send_sightings() -> None:
        while True:
            await asyncio.sleep(SIGHTINGS_INTERVAL)
            if handler.sightings:
                try:
                    await channel.send(("sightings", handler.take_sightings()))
                except ChannelClosed:
                    break

    follower = loop.create_task(follow(), name="follow the main process")
    sweeper = loop.create_task(expire_signatures(), name="expire signatures")
    sighter = loop.create_task(send_sightings(), name="send token sightings")
    settle_memory()
    await channel.send(("ready", first.number))
    await stop.wait()
    follower.cancel()
    sweeper.cancel()
    sighter.cancel()
    await asyncio.gather(follower, sweeper, sighter, return_exceptions=True)
    await listeners.stop(DRAIN_TIMEOUT)
    channel.close()


def _build(jobs: Sequence[SteerJob]) -> list[Steered]:
    return [job.run() for job in jobs]


@dataclass(frozen=True)
class WorkersReport:
    """What /healthz, /v1/status and /metrics say of the DNS workers."""

    expected: int  # --workers
    alive: int  # answering DNS now
    restarts: int  # respawned since start-up

    @property
    def degraded(self) -> bool:
        return self.alive < self.expected


class Worker:
    def __init__(self, process: multiprocessing.process.BaseProcess, sock: socket.socket, backoff: float = 0.0) -> None:
        self.process = process
        self.sock = sock  # ours until start() opens the channel on it
        self.started = time.monotonic()
        self.backoff = backoff  # the delay its own respawn waited (0: none)
        self.replaces: int | None = None  # the pid of the dead worker it was started for
        self.channel: Channel | None = None
        self.acked = -1  # the newest generation this worker answers with
        self.stats: dict[int, asyncio.Future[QueryStats]] = {}
        self.gone = False
        self.error: str | None = None

    async def send(self, data: bytes) -> None:
        if self.gone or self.channel is None:
            return
        try:
            await self.channel.send_bytes(data)
        except ChannelClosed:
            self.gone = True
            if self.process.is_alive():
                log.error("DNS worker %s is unreachable; its share of queries may go unanswered", self.process.pid)


class WorkerPool:
    """The worker processes, the channel each one is fed through, and what each has acknowledged."""

    def __init__(self, count: int, config: WorkerConfig, on_sightings: Callable[[Sequence[Sighting]], None] | None = None) -> None:
        self.count = count
        self.config = config
        self.on_sightings = on_sightings  # the main process's TokenBook.note
        self.workers: list[Worker] = []  # one per slot; a dead one is replaced in its slot
        self.restarts = 0
        self._running = False  # after start(): a worker that dies is respawned
        self.stopping = False  # set when the server begins to stop: no worker is respawned from then on
        self._sent: Snapshot | None = None
        self._newest: Snapshot | None = None  # published, not sent yet
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._acked = asyncio.Condition()
        self._requests = itertools.count()

    def spawn(self) -> None:
        """Start the processes; each waits for its first generation (start() sends it)."""
        for _ in range(self.count):
            self.workers.append(self._spawn_one())

    def _spawn_one(self, backoff: float = 0.0) -> Worker:
        ours, theirs = socket.socketpair()
        process = multiprocessing.get_context("spawn").Process(
            target=worker_main, args=(theirs, self.config), name="geolb-worker", daemon=True
        )
        try:
            process.start()
        except Exception as exc:
            ours.close()
            raise GeolbError(f"cannot start a DNS worker: {exc}") from exc
        finally:
            theirs.close()
        return Worker(process, ours, backoff)

    async def start(self, snapshot: Snapshot) -> None:
        """Send the first generation and wait until every worker answers DNS with it."""
        first = pickle.dumps(("generation", whole_generation(snapshot)))
        for worker in self.workers:
            worker.channel = await Channel.open(worker.sock)
            self._background(self._receive(worker), f"worker {worker.process.pid}")
            await worker.send(first)
        self._sent = snapshot
        if not await self.settled(snapshot.generation, timeout=START_TIMEOUT):
            raise GeolbError(f"a DNS worker did not start within {START_TIMEOUT:g} s")
        for worker in self.workers:
            if worker.gone:
                raise GeolbError(f"a DNS worker failed to start: {worker.error or 'it exited'}")
        self._background(self._send_generations(), "feed workers")
        self._running = True

    async def _receive(self, worker: Worker) -> None:
        assert worker.channel is not None
        while True:
            try:
                message = await worker.channel.recv()
            except ChannelClosed:
                break
            kind = message[0]
            if kind in ("ack", "ready"):
                worker.acked = max(worker.acked, message[1])
                if kind == "ready" and worker.replaces is not None:
                    log.info("DNS worker %s answers in place of %s", worker.process.pid, worker.replaces)
                await self._notify()
            elif kind == "stats":
                waiter = worker.stats.pop(message[1], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message[2])
            elif kind == "sightings":
                if self.on_sightings is not None:
                    self.on_sightings(message[1])
            elif kind == "error":
                worker.error = message[1]
        worker.gone = True
        await self._notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while worker.process.exitcode is None and loop.time() < deadline:  # let an exit status arrive
            await asyncio.sleep(0.02)
        if worker.process.exitcode not in (None, 0):
            log.error("DNS worker %s exited with %s", worker.process.pid, worker.process.exitcode)
        if self._running and not self.stopping:
            self._background(self._respawn(worker), f"respawn worker {worker.process.pid}")

    async def _respawn(self, dead: Worker) -> None:
        """Start another worker in a dead one's slot with the newest generation sent; back off if it keeps dying."""
        if dead not in self.workers:
            return
        if dead.replaces is None or time.monotonic() - dead.started >= RESPAWN_STABLE:
            delay = 0.0  # the first death of a worker that ran (not one dying again on its start)
        else:
            delay = min(max(RESPAWN_BACKOFF_FIRST, dead.backoff * 2), RESPAWN_BACKOFF_MAX)
        wait = max(delay, CLEAN_EXIT_GRACE if dead.process.exitcode == 0 else 0.0)
        why = f"exit {dead.process.exitcode}" + (f": {dead.error}" if dead.error else "")
        log.warning("DNS worker %s is gone (%s): starting another in %.1f s", dead.process.pid, why, wait)
        await asyncio.sleep(wait)
        if self.stopping or self._sent is None:
            return
        if dead.channel is not None:
            dead.channel.close()
        try:
            worker = self._spawn_one(delay)
            worker.replaces = dead.process.pid
        except GeolbError as exc:
            log.error("%s", exc)
            self._respawn_later(dead, delay)
            return
        placed = False
        try:
            worker.channel = await Channel.open(worker.sock)
            while not placed:
                snapshot = self._sent
                whole = whole_generation(snapshot)
                data = await asyncio.to_thread(pickle.dumps, ("generation", whole))
                if snapshot is self._sent and not self.stopping:
                    # No await between this check and the write: every later generation goes to it after this one.
                    self.workers[self.workers.index(dead)] = worker
                    placed = True
                    self.restarts += 1
                    self._background(self._receive(worker), f"worker {worker.process.pid}")
                    await worker.send(data)
                elif self.stopping:
                    break
        finally:
            if not placed:  # stopping meanwhile (or cancelled): this one never served
                worker.process.kill()
                worker.process.join(1)
                if worker.channel is not None:
                    worker.channel.close()
                else:
                    worker.sock.close()

    def _respawn_later(self, dead: Worker, delay: float) -> None:
        """Starting a process failed: try again after the next backoff, as if the new one had died at once."""
        dead.started = time.monotonic()
        dead.backoff = delay
        dead.replaces = dead.replaces or dead.process.pid
        self._background(self._respawn(dead), "respawn worker")

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._acked:
            self._acked.notify_all()

    async def settled(self, generation: int, timeout: float) -> bool:
        """Wait (at most `timeout` s) until every live worker answers with `generation` or newer."""

        def done() -> bool:
            return all(worker.gone or worker.acked >= generation for worker in self.workers)

        async with self._acked:
            try:
                await asyncio.wait_for(self._acked.wait_for(done), timeout)
            except TimeoutError:
                return False
        return True

    def publish(self, snapshot: Snapshot) -> None:
        """Hand a snapshot to the workers (runtime listener: must not block the loop)."""
        self._newest = snapshot
        self._wake.set()

    async def _send_generations(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            snapshot, sent = self._newest, self._sent
            if snapshot is None or sent is None or snapshot is sent:
                continue
            # Against what was sent last: zones or maps skipped by collapsing still count as changed.
            zones_changed = snapshot.zones is not sent.zones
            maps_changed = snapshot.maps is not sent.maps
            evidence_changed = snapshot.evidence is not sent.evidence
            generation = Generation(
                snapshot.generation,
                snapshot.zones if zones_changed else None,
                snapshot.health,
                map_keys(snapshot) if maps_changed else None,
                snapshot.evidence if evidence_changed else None,
            )
            message: tuple[str, Generation] = ("generation", generation)
            # A zone set or evidence takes milliseconds to pickle (once for all workers): off the loop that probes and serves the API.
            slow = zones_changed or evidence_changed
            data = await asyncio.to_thread(pickle.dumps, message) if slow else pickle.dumps(message)
            self._sent = snapshot
            await asyncio.gather(*(worker.send(data) for worker in self.workers))

    @property
    def alive(self) -> int:
        """Workers answering DNS: started, ready and not gone."""
        return sum(1 for worker in self.workers if not worker.gone and worker.acked >= 0 and worker.process.is_alive())

    def report(self) -> WorkersReport:
        return WorkersReport(expected=self.count, alive=self.alive, restarts=self.restarts)

    async def stats(self) -> Sequence[QueryStats]:
        """Every worker's counters, asked now (a worker that does not answer in time is left out)."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[QueryStats]] = []
        for worker in self.workers:
            if worker.gone or worker.acked < 0:  # gone, or (respawned) still starting: nothing counted yet
                continue
            request = next(self._requests)
            waiter: asyncio.Future[QueryStats] = loop.create_future()
            worker.stats[request] = waiter
            await worker.send(pickle.dumps(("stats", request)))
            waits.append(waiter)
        out: list[QueryStats] = []
        for waiter in waits:
            try:
                out.append(await asyncio.wait_for(waiter, STATS_TIMEOUT))
            except TimeoutError:
                continue
        return out

    async def stop(self) -> None:
        self.stopping = True  # from here no worker is respawned
        loop = asyncio.get_running_loop()
        stop = pickle.dumps(("stop",))
        await asyncio.gather(*(worker.send(stop) for worker in self.workers))
        deadline = loop.time() + DRAIN_TIMEOUT + 2
        for worker in self.workers:
            while worker.process.is_alive() and loop.time() < deadline:
                await asyncio.sleep(0.02)
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(1)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self.workers:
            if worker.channel is not None:
                worker.channel.close()
            else:
                worker.sock.close()
