"""`--workers N`: DNS worker processes on SO_REUSEPORT sockets, fed zones and health by the main process.

The main process keeps the one prober, the HTTP API and reloads; every new
snapshot it publishes (a reload, a health change, a forced state) goes down a pipe
to each worker, which swaps it in before its next query. Workers answer with the
same handler code as a single process, so any worker gives the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import logging
import multiprocessing
import multiprocessing.connection
import signal
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from geolb import model
from geolb.errors import GeolbError
from geolb.eventloop import loop_factory
from geolb.geo.locate import open_locator
from geolb.handler import QueryHandler, QueryStats
from geolb.health.state import HealthView
from geolb.net.listeners import DnsListeners, HostPort
from geolb.net.tcp import TcpLimits
from geolb.runtime import Runtime, Snapshot, settle_memory

log = logging.getLogger("geolb.workers")
START_TIMEOUT = 60.0
STATS_TIMEOUT = 2.0
DRAIN_TIMEOUT = 5.0


def _mappingproxy(items: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(items)


def _reduce_mappingproxy(proxy: types.MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _mappingproxy, (dict(proxy),)


# The model's read-only mappings travel to workers as the dicts they wrap.
copyreg.pickle(types.MappingProxyType, _reduce_mappingproxy)


@dataclass(frozen=True)
class WorkerConfig:
    listen: tuple[HostPort, ...]  # with the ports the main process found free
    geoip: str | None
    tcp: TcpLimits
    fast_path: bool
    log_level: int


def worker_main(conn: multiprocessing.connection.Connection, config: WorkerConfig, zones: model.ZoneSet, health: HealthView) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the main process decides
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(_serve(conn, config, zones, health))
    except GeolbError as exc:
        conn.send(("error", str(exc)))


async def _serve(conn: multiprocessing.connection.Connection, config: WorkerConfig, zones: model.ZoneSet, health: HealthView) -> None:
    loop = asyncio.get_running_loop()
    runtime = Runtime(zones, health)
    handler = QueryHandler(runtime, open_locator(config.geoip), fast_path=config.fast_path)
    listeners = DnsListeners(handler, config.tcp)
    await listeners.start(config.listen, reuse_port=True)
    stop = asyncio.Event()

    def on_message() -> None:
        while conn.poll():
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                loop.remove_reader(conn.fileno())
                stop.set()  # the main process is gone
                return
            if kind == "zones":
                runtime.swap_zones(payload)
            elif kind == "health":
                runtime.publish_health(payload)
            elif kind == "stats":
                conn.send(("stats", handler.fold_stats()))
            elif kind == "stop":
                stop.set()

    loop.add_reader(conn.fileno(), on_message)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    settle_memory()
    conn.send(("ready", None))
    await stop.wait()
    await listeners.stop(DRAIN_TIMEOUT)


class Worker:
    def __init__(self, process: multiprocessing.process.BaseProcess, conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn
        self.replies: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()


class WorkerPool:
    """The worker processes, and the pipe each one is fed through."""

    def __init__(self, count: int, config: WorkerConfig) -> None:
        self.count = count
        self.config = config
        self.workers: list[Worker] = []
        self._sent: tuple[model.ZoneSet, HealthView] | None = None

    async def start(self, snapshot: Snapshot) -> None:
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        for _ in range(self.count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main, args=(theirs, self.config, snapshot.zones, snapshot.health), name="geolb-worker", daemon=True
            )
            try:
                process.start()
            except Exception as exc:  # e.g. a snapshot that will not pickle: a bug, but say so plainly
                raise GeolbError(f"cannot start a DNS worker: {exc}") from exc
            theirs.close()
            worker = Worker(process, ours)
            loop.add_reader(ours.fileno(), self._receive, worker)
            self.workers.append(worker)
        self._sent = (snapshot.zones, snapshot.health)
        for worker in self.workers:
            try:
                kind, payload = await asyncio.wait_for(worker.replies.get(), START_TIMEOUT)
            except TimeoutError:
                raise GeolbError(f"a DNS worker did not start within {START_TIMEOUT:g} s") from None
            if kind != "ready":
                raise GeolbError(str(payload))

    def _receive(self, worker: Worker) -> None:
        try:
            while worker.conn.poll():
                worker.replies.put_nowait(worker.conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            worker.replies.put_nowait(("error", "worker exited"))
            if worker.process.exitcode not in (None, 0):
                log.error("DNS worker %s exited with %s", worker.process.pid, worker.process.exitcode)

    def publish(self, snapshot: Snapshot) -> None:
        """Send what changed in this snapshot to every worker."""
        if self._sent is None:
            return
        zones, health = self._sent
        messages: list[tuple[str, object]] = []
        if snapshot.zones is not zones:
            messages.append(("zones", snapshot.zones))
        if snapshot.health is not health:
            messages.append(("health", snapshot.health))
        self._sent = (snapshot.zones, snapshot.health)
        for worker in self.workers:
            for message in messages:
                try:
                    worker.conn.send(message)
                except OSError:
                    log.error("DNS worker %s is gone; its share of queries goes unanswered", worker.process.pid)

    @property
    def alive(self) -> int:
        return sum(1 for worker in self.workers if worker.process.is_alive())

    async def stats(self) -> Sequence[QueryStats]:
        """Every worker's counters (a worker that does not answer in time is left out)."""
        out: list[QueryStats] = []
        for worker in self.workers:
            try:
                worker.conn.send(("stats", None))
                while True:
                    kind, payload = await asyncio.wait_for(worker.replies.get(), STATS_TIMEOUT)
                    if kind == "stats":
                        out.append(payload)
                        break
                    if kind == "error":
                        break
            except (OSError, TimeoutError):
                continue
        return out

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send(("stop", None))
        deadline = loop.time() + DRAIN_TIMEOUT + 2
        for worker in self.workers:
            while worker.process.is_alive() and loop.time() < deadline:
                await asyncio.sleep(0.02)
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(1)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
