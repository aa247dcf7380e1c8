"""Wiring: load zones and GeoIP, start the DNS workers and the HTTP API, probe, handle signals, reload, stop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from geolb.cluster.etcd import EtcdClient, EtcdError
from geolb.cluster.member import ClusterMember, lease_ttl
from geolb.config.serials import load_served, remember_served
from geolb.config.zoneset import ZoneSetResult, fingerprint, load_zoneset
from geolb.dns.cookies import new_secret
from geolb.dns.ratelimit import RateLimits
from geolb.errors import ConfigError, GeoIPError, GeolbError, ZoneSetError
from geolb.eventloop import loop_factory
from geolb.geo.choose import AnswerMemo, GeoAnswers
from geolb.geo.locate import Locator, NoLocator, database_file
from geolb.geo.regionmap import RegionMap
from geolb.geo.store import GeoIPReport, MapBuildCancelled, MapBuildError, MapStore, default_cache_dir
from geolb.handler import AnswerKey, QueryStats
from geolb.health.probe import Outcome
from geolb.health.prober import Prober
from geolb.health.state import HealthState, Transition, health_keys, load_rules
from geolb.http.api import build_app
from geolb.http.feed import ANSWER_SAMPLE, AnswerWindow, StatusFeed
from geolb.http.metrics import Metrics, server_metrics
from geolb.http.rum import RumListener
from geolb.model import HealthKey, IPAddress, IPNetwork, ZoneSet
from geolb.net.holders import Holder, has_exited, instances_on
from geolb.net.listeners import AddressInUseError, HostPort, held, reserve_pair, resolve
from geolb.net.tcp import TcpLimits
from geolb.runtime import Runtime, settle_memory
from geolb.steer.aggregate import GeoOrder, RumStore, write_saved
from geolb.steer.evidence import PoolEvidence, answer_digest
from geolb.steer.feed import RumShare, VantageFeed
from geolb.steer.overlay import geo_rankings
from geolb.steer.tokens import TokenBook
from geolb.workers import WorkerConfig, WorkerPool, WorkersReport

log = logging.getLogger("geolb")
WATCH_SETTLE = 0.3  # a changed zones directory must stay unchanged this long before a reload
LOAD_BATCH = 1.0  # load figures that move no endpoint in or out of answers are published at most this often
LOAD_EXPIRY_TICK = 1.0  # how often stale load reports are looked for
PROBER_NICENESS = 10  # this process probes: when CPUs are short, DNS workers (default priority) go first
CLUSTER_JOIN_WAIT = 2.0  # at start-up, how long to wait for etcd before answering from own checks
REPLACE_TIMEOUT = 20.0  # --replace: how long the instance replaced may take to finish its TCP answers and exit
EVIDENCE_DEBOUNCE = 0.25  # beacons arriving together make one evidence generation, within ~1 s of the first
EVIDENCE_REFRESH = 5.0  # figures that move no answer reach the workers (explain, status) at most this often ...
EVIDENCE_REFRESH_PER_MILLION = 55.0  # ... plus this per million networks (each refresh rebuilds the workers' maps)
EVIDENCE_SHARE = 0.2  # at most this share of the main loop goes to building evidence (a million networks take a while)
RUM_UPKEEP = 60.0  # seconds between saves of the RUM measurements (and evidence rebuilt: old samples decay)
RUM_FOLDER = "rum"  # under the cache directory


@dataclass(frozen=True)
class ServeOptions:
    zones_dir: str = "zones"
    geoip: str | None = None
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 5353),)
    http: HostPort | None = field(default_factory=lambda: HostPort("127.0.0.1", 8053))
    tcp: TcpLimits = field(default_factory=TcpLimits)
    api_token: str | None = None
    probe_concurrency: int = 1024  # checks of a start-up or reload round under way at once
    watch_interval: float = 1.0  # seconds between looks at the zones directory; 0: do not watch
    fast_path: bool = True
    workers: int = 1  # DNS processes; this one probes, serves the API and reloads
    log_level: int = logging.INFO
    cache_dir: str | None = None  # region maps on disk; None: default_cache_dir()
    probe_sources: tuple[IPAddress, ...] = ()  # where health checks leave from, at most one per family
    cluster: tuple[str, ...] = ()  # etcd endpoints ("http://HOST:PORT"); empty: this instance decides alone
    cluster_prefix: str = "/geolb"
    instance: str = field(default_factory=socket.gethostname)
    nsid: str | None = None  # NSID (RFC 5001) answered to queries that ask; None: the instance name; "": none
    cookie_secrets: tuple[bytes, ...] = ()  # DNS Cookies (RFC 9018); empty: a random secret for this run
    rate_limits: RateLimits = field(default_factory=RateLimits)  # UDP response rate limiting (off unless a rate is set)
    replace: bool = False  # take over --listen addresses another geolb serves, then stop it
    # Latency steering (SPEC §10)
    rum_listen: HostPort | None = None  # the RUM listener (GET /rum.js, POST /v1/rum); None: off
    rum_addresses: tuple[IPAddress, ...] = ()  # what "<token>.rum.<zone>" answers: the RUM listener's public addresses
    rum_trusted_proxies: tuple[IPNetwork, ...] = ()  # peers whose X-Forwarded-For names the client
    rum_rate: int = 60  # beacons a minute from one /24 (or /48) before 429
    rum_max_networks: int = 1_000_000  # per pool; least recently measured dropped first
    location: tuple[float, float] | None = None  # this instance's place (--location): its checks' times are vantage evidence


async def _settled(read: Callable[[], object]) -> None:
    """Wait until `read()` gives the same twice WATCH_SETTLE apart: an editor, a deploy tool or geoipupdate
    may write several times."""
    current = read()
    while True:
        await asyncio.sleep(WATCH_SETTLE)
        settled = read()
        if settled == current:
            return
        current = settled


def file_stamp(path: str | None) -> tuple[int, int, int] | None:
    """What tells a replaced or rewritten file apart (inode, size, modification time); None when missing."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


SETTLE_TIMEOUT = 2.0  # how long a mutating API call waits for every worker to answer with its change


def usable_cache_dir(wanted: str | None) -> tuple[str, bool]:
    """The cache directory to use, and whether it is a private temporary one (removed at exit)."""
    path = wanted or default_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            return path, False
    except OSError as exc:
        private = tempfile.mkdtemp(prefix="geolb-maps-")
        log.warning("cache directory %s is not writable (%s): using %s for this run", path, exc.strerror, private)
        return private, True


def probe_sources(addresses: tuple[IPAddress, ...]) -> dict[int, str]:
    """--probe-source addresses by IP version, each checked to be one this host can send from."""
    sources: dict[int, str] = {}
    for address in addresses:
        if address.version in sources:
            raise GeolbError(f"--probe-source: one address per family, got {sources[address.version]} and {address}")
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((str(address), 0))
        except OSError as exc:
            raise GeolbError(f"--probe-source {address}: cannot send from it ({exc.strerror})") from None
        sources[address.version] = str(address)
    return sources


def rum_addresses(options: ServeOptions) -> tuple[IPAddress, ...]:
    """What "<token>.<rum_name>" answers: --rum-address, else the RUM listener's own address when it is a specific one."""
    if options.rum_addresses or options.rum_listen is None:
        return options.rum_addresses
    try:
        address = ipaddress.ip_address(options.rum_listen.host)
    except ValueError:
        return ()  # a host name: the operator names the public addresses
    return () if address.is_unspecified else (address,)


class Server:
    """The main geolb process: zones, GeoIP, health checks, cluster, HTTP API; DNS is answered by its workers."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self._seen_files = fingerprint(options.zones_dir)  # before loading: a change meanwhile means one more reload
        self.cache_dir, self._private_cache = usable_cache_dir(options.cache_dir)
        # Derived serials move forward from the last run's (read where they were kept, even when that is read-only now).
        self._served_serials = load_served((options.cache_dir or default_cache_dir()) if self._private_cache else self.cache_dir)
        result = load_zoneset(options.zones_dir, served=self._served_serials)
        if not result.ok:
            self._drop_private_cache()
            raise ZoneSetError(result.errors)
        for warning in result.warnings:
            log.warning("%s", warning)
        self.last_reload = result
        self.maps = MapStore(self.cache_dir)
        source = self._geoip_source = database_file(options.geoip)
        self._geoip_seen = file_stamp(source)  # before opening: a change meanwhile means one more load
        try:
            self.locator: Locator = self.maps.take_database(source) if source is not None else NoLocator()
        except BaseException:
            self._drop_private_cache()
            raise
        self.geoip = GeoIPReport(loaded=time.time())
        self.runtime = Runtime(result.zoneset)  # region maps arrive in start(), before any answer
        self.explain_maps = AnswerMemo(limit=8)
        self.tokens = TokenBook()  # resolver discovery (SPEC §10): token lookups the workers answered; the RUM listener reads it
        self.feed = StatusFeed()
        self.feed.follow(self.runtime)
        self.answer_window = AnswerWindow()
        self.metrics = Metrics()
        self.health = HealthState()
        self.health.set_targets(health_keys(result.zoneset))
        self.health.set_endpoints(load_rules(result.zoneset))
        self._load_publish: asyncio.TimerHandle | None = None
        self._checks_publish: asyncio.Handle | None = None
        self._load_expiry: asyncio.Task[None] | None = None
        self._answer_sampler: asyncio.Task[None] | None = None
        # Vantage points (SPEC §10): this instance's check times (with --location), every instance's figures.
        self.vantage = VantageFeed(options.instance, options.location, lambda: self.runtime.snapshot, self.rum_changed)
        self.prober = Prober(
            self.health,
            self.checks_changed,
            sources=probe_sources(options.probe_sources),
            concurrency=options.probe_concurrency,
            observe=self.metrics.observe_probe if options.location is None else self._observe_probe,
            on_transition=self._on_transition,
        )
        self.prober.describe(result.zoneset)
        self.cluster: ClusterMember | None = None
        if options.cluster:
            client = EtcdClient(options.cluster)
            self.cluster = ClusterMember(
                client,
                options.cluster_prefix,
                options.instance,
                self.health,
                self.publish_health,
                ttl=lease_ttl(result.zoneset),
                on_vantage=self.vantage.peer_report,
                on_rum=self._peer_rum,
            )
            self.vantage.publish = self.cluster.publish_vantage
        self._cluster_task: asyncio.Task[None] | None = None
        self._cluster_writes: set[asyncio.Task[None]] = set()
        self.metrics.attach(lambda: server_metrics(self))
        self._reload_lock = asyncio.Lock()
        self.pool: WorkerPool | None = None
        self.scraped_stats = QueryStats()  # what /metrics renders: gathered from every process per scrape
        self.dns_addresses: list[str] = []
        self.http_address: str | None = None
        self._http_runner: web.AppRunner | None = None
        self._replacing: dict[int, Holder] = {}  # --replace: the geolb main processes sharing our addresses
        self._http_deferred = False  # --replace: our HTTP address is the replaced instance's, ours once it exits
        self._http_retry: asyncio.Task[None] | None = None  # --replace: the old instance outlived its timeout
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[ZoneSetResult]] = set()
        # Latency steering (SPEC §10): beacons in, evidence published for `steering: latency` pools.
        self.rum_store = RumStore(max_networks=options.rum_max_networks, instance=options.instance)
        publish_rum = self.cluster.publish_rum if self.cluster is not None else lambda pool, data: None
        self.rum_share = RumShare(self.rum_store, publish_rum, self.rum_changed)
        self.rum: RumListener | None = None
        self.rum_address: str | None = None
        self.rum_addresses = rum_addresses(options)  # what "<token>.<rum_name>" answers (explain shows it as DNS does)
        self._rum_runner: web.AppRunner | None = None
        self._evidence_rebuild: asyncio.TimerHandle | None = None
        self._rum_evidence: dict[str, PoolEvidence] = {}  # per latency pool: the store's last evidence (RUM only)
        self._evidence_digests: dict[str, bytes] = {}  # answer_digest of each pool's evidence last published
        self._evidence_published = 0.0  # time.monotonic() of that publication
        self._evidence_cost = 0.0  # seconds the last evidence build took: the next waits longer when builds are long
        self._rum_saving: asyncio.Task[None] | None = None
        self._rum_upkeep: asyncio.Task[None] | None = None
        self._rum_deferred = False  # --replace: our RUM address is the replaced instance's, ours once it exits
        self._rum_retry: asyncio.Task[None] | None = None  # --replace: the old instance outlived its timeout

    def _on_transition(self, transition: Transition) -> None:
        self.metrics.count_transition(transition)
        self.feed.note_transition(transition)

    async def _sample_answers(self) -> None:
        """Answer counters every ANSWER_SAMPLE seconds, for the status page's share of answers per region."""
        while True:
            stats = await self.query_stats()
            self.answer_window.sample(stats.geo_answers, time.time())
            await asyncio.sleep(ANSWER_SAMPLE)

    async def recent_answers(self) -> tuple[dict[AnswerKey, int], float]:
        """GEO answers per (pool, region) over about the last minute, and the seconds they span."""
        stats = await self.query_stats()
        return self.answer_window.recent(stats.geo_answers, time.time())

    def force(self, pool: str, region: str, address: IPAddress, up: bool | None) -> None:
        """An operator's forced state (None: back to the checks); it survives reloads, and in a cluster
        it is stored in etcd for every instance and every restart."""
        if self.health.force((pool, region, address), up):
            log.warning("%s/%s %s forced %s", pool, region, address, "back to its checks" if up is None else ("up" if up else "down"))
            self.publish_health()
        if self.cluster is not None:
            self._cluster_write(self.cluster.put_forced((pool, region, address), up), "forced state")

    def push_load(self, pool: str, region: str, address: IPAddress, load: float) -> None:
        """A load report from another system (SPEC §6); the last report from the check or the API counts."""
        now = time.time()
        if self.health.push_load((pool, region, address), load, now):
            self.publish_health()
        if self.cluster is not None:
            self._cluster_write(self.cluster.put_load((pool, region, address), load, now), "load report")

    def _cluster_write(self, write: Coroutine[Any, Any, None], what: str) -> None:
        """Store a change in etcd without making the API call wait on it; applied here already."""

        async def attempt() -> None:
            try:
                await write
            except EtcdError as exc:
                log.warning("cluster: %s kept on this instance only (etcd: %s)", what, exc)

        task = asyncio.get_running_loop().create_task(attempt())
        self._cluster_writes.add(task)
        task.add_done_callback(self._cluster_writes.discard)

    def checks_changed(self) -> None:
        """The prober's own results changed health: in a cluster etcd gets them, then the next query sees them.

        Results that arrive together (a whole region failing, thousands of targets) make
        one generation: the publication waits for the end of this turn of the loop.
        """
        if self.cluster is not None:
            self.cluster.sync()
        if self._checks_publish is None:
            self._checks_publish = asyncio.get_running_loop().call_soon(self._publish_checks)

    def _publish_checks(self) -> None:
        self._checks_publish = None
        self.publish_health()

    def publish_health(self) -> None:
        """The prober, a forced state or a load report changed health: the next query sees it.

        A change of load figures alone (weights, nobody entering or leaving answers) is
        batched, at most one generation per LOAD_BATCH: each generation empties every
        worker's packet cache, and a large pool reports loads many times a second.
        """
        view = self.health.view
        current = self.runtime.snapshot.health
        if view is current:
            return
        if view.same_states(current):
            if self._load_publish is None:
                self._load_publish = asyncio.get_running_loop().call_later(LOAD_BATCH, self._publish_loads)
            return
        if self._load_publish is not None:
            self._load_publish.cancel()
            self._load_publish = None
        self.runtime.publish(health=view)

    def _publish_loads(self) -> None:
        self._load_publish = None
        if self.health.view is not self.runtime.snapshot.health:
            self.runtime.publish(health=self.health.view)

    async def _expire_loads(self) -> None:
        """Forget load reports older than 3 check intervals (SPEC §3 rule 7), so a silent reporter stops counting."""
        while True:
            await asyncio.sleep(LOAD_EXPIRY_TICK)
            if self.health.expire_loads(time.time()):
                self.publish_health()

    async def settled(self) -> bool:
        """Wait until every process answers with the current generation (bounded); True when they do."""
        if self.pool is None:
            return True
        return await self.pool.settled(self.runtime.snapshot.generation, SETTLE_TIMEOUT)

    @property
    def api_token(self) -> str | None:
        return self.options.api_token

    @property
    def checks_scheduled(self) -> int:
        return self.prober.scheduled

    def geo_answers(self) -> GeoAnswers:
        """GEO choices for the current snapshot, as DNS makes them (for /v1/explain)."""
        snapshot = self.runtime.snapshot
        return GeoAnswers(snapshot.maps, snapshot.health, self.explain_maps, snapshot.evidence)

    async def start(self) -> None:
        if self.cluster is not None:
            self._cluster_task = asyncio.get_running_loop().create_task(self.cluster.run(), name="cluster")
        reserved = self._spawn_workers()  # they start up meanwhile
        # SPEC §4: one round of checks before the first answer; first results set the states.
        # The region maps (seconds when nothing is cached) are read or built at the same time.
        keys = self.health.targets()
        if keys:
            log.info("checking %d health target(s) before answering", len(keys))
        zones = self.runtime.snapshot.zones
        self._load_rum()
        for pool in zones.pools.values():  # what this instance measured before, for its peers
            if pool.steering == "latency":
                self.rum_share.beacon_added(pool.name)
        maps, _ = await asyncio.gather(asyncio.to_thread(self.maps.maps_for, zones, self.locator), self.prober.check_once(keys))
        if self.cluster is not None:
            # Forced states and the others' votes before the first answer, if etcd answers soon.
            self.cluster.sync()
            if not await self.cluster.connected(CLUSTER_JOIN_WAIT):
                log.warning("cluster: not joined yet; answering from own checks meanwhile")
        self.runtime.publish(health=self.health.view, maps=maps, evidence=self._evidence(zones, maps))
        self.vantage.tick()  # the first round's times: vantage evidence from the first answers on
        remember_served(self.cache_dir, self.runtime.snapshot.zones, self._served_serials)
        self.prober.schedule(keys)
        self.vantage.start()
        self._load_expiry = asyncio.get_running_loop().create_task(self._expire_loads(), name="expire load reports")
        await self._start_workers(reserved)
        self._answer_sampler = asyncio.get_running_loop().create_task(self._sample_answers(), name="sample answers")
        if PROBER_NICENESS:
            # The workers (started before this) keep their priority: when the CPUs are
            # short, answers go first and checks wait, never the other way round.
            with contextlib.suppress(OSError):
                os.nice(PROBER_NICENESS)
        if self.options.http is not None:
            self._http_runner = web.AppRunner(build_app(self), access_log=None)
            await self._http_runner.setup()
            self._http_deferred = not await self._bind_http(wait_for_replaced=bool(self._replacing))
        await self._start_rum()

    async def _bind_http(self, wait_for_replaced: bool) -> bool:
        """Serve the API on --http; False when the address is in use and may be the replaced instance's."""
        assert self._http_runner is not None and self.options.http is not None
        bound = await self._bind_site(self._http_runner, self.options.http, "http", wait_for_replaced)
        if bound is not None:
            self.http_address = bound
        return bound is not None

    async def _bind_site(
        self, runner: web.AppRunner, address: HostPort, kind: str, wait_for_replaced: bool, backlog: int = 128
    ) -> str | None:
        """Start `runner` on `address`: the address bound (the port filled in), or None when it is in use by an
        instance --replace is about to stop (`wait_for_replaced`); any other failure raises, naming the address."""
        site = web.TCPSite(runner, address.host, address.port, backlog=backlog)
        try:
            await site.start()
        except OSError as exc:
            if wait_for_replaced and exc.errno == errno.EADDRINUSE and self._held_by_replaced(address, kind):
                return None
            reason = "address in use" if exc.errno == errno.EADDRINUSE else os.strerror(exc.errno) if exc.errno else str(exc)
            raise GeolbError(f"cannot listen on {address} ({kind}): {reason}") from None
        bound = runner.addresses
        return str(HostPort(address.host, int(bound[0][1]) if bound else address.port))

    def _held_by_replaced(self, address: HostPort, kind: str = "http") -> bool:
        """True when only instances that --replace is about to stop hold `address`: then it is ours once they exit.
        Anything else holding it (raises, naming it) is an error before any instance is stopped."""
        family, host = resolve(address)
        holders = instances_on(host, address.port, family, exclude={os.getpid()})
        strangers = [holder for holder in holders if holder.pid not in self._replacing]
        if strangers:
            stranger = strangers[0].pid
            raise GeolbError(f"cannot listen on {address} ({kind}): address in use by geolb {stranger}, which --replace does not stop")
        return bool(holders)

    async def _bind_later(self, bind: Callable[[bool], Coroutine[Any, Any, bool]], done: Callable[[], str]) -> None:
        """The replaced instance still holds one of our HTTP addresses (the API's, the RUM listener's): DNS is
        answered meanwhile; take it once it is free."""
        while True:
            await asyncio.sleep(1.0)
            try:
                if await bind(False):
                    log.info("%s", done())
                    return
            except GeolbError:
                continue

    async def _take_over(self) -> None:
        """--replace, once our workers answer: the instances we share addresses with finish their TCP answers and
        exit (SIGTERM, SPEC §1; their workers answer what their sockets hold before closing them), then their
        HTTP address is ours."""
        if not self._replacing:
            return
        loop = asyncio.get_running_loop()
        for holder in self._replacing.values():
            log.info("replacing geolb %d (%s): our workers answer; asking it to stop", holder.pid, holder.command)
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder.pid, signal.SIGTERM)
        waiting = set(self._replacing)
        deadline = loop.time() + REPLACE_TIMEOUT
        while waiting and loop.time() < deadline:
            await asyncio.sleep(0.05)
            waiting = {pid for pid in waiting if not has_exited(pid)}
        for pid in sorted(waiting):
            log.warning("geolb %d has not exited within %g s of SIGTERM: it may still answer a share of the queries", pid, REPLACE_TIMEOUT)
        for pid in sorted(set(self._replacing) - waiting):
            log.info("geolb %d has exited: this instance answers alone", pid)
        if self._http_deferred:
            try:
                self._http_deferred = not await self._bind_http(wait_for_replaced=False)
            except GeolbError as exc:
                # The old instance is told to stop already: whatever happens, this one keeps answering DNS.
                log.error("%s; answering DNS meanwhile, trying again every second", exc)
                self._http_retry = loop.create_task(
                    self._bind_later(self._bind_http, lambda: f"API listening on {self.http_address}"), name="take the HTTP address"
                )
        if self._rum_deferred:
            try:
                self._rum_deferred = not await self._bind_rum(wait_for_replaced=False)
            except GeolbError as exc:
                log.error("%s; answering DNS meanwhile, trying again every second", exc)
                self._rum_retry = loop.create_task(
                    self._bind_later(self._bind_rum, lambda: f"RUM listener on {self.rum_address}"), name="take the RUM address"
                )

    def _spawn_workers(self) -> list[tuple[socket.socket, socket.socket, HostPort]]:
        """Check the --listen addresses, pick the ports of port 0 ones, and start the worker processes on them;
        they wait for a snapshot, then bind.

        An address another process holds is refused: SO_REUSEPORT would share its queries
        with it without a word. With --replace, one that a geolb holds is shared until our
        workers answer (then _take_over stops it). Only a port-0 address is held here (to
        keep the port found free): a socket of this process in the group would take its
        share of the queries and never answer them.
        """
        reserved: list[tuple[socket.socket, socket.socket, HostPort]] = []
        listen: list[HostPort] = []
        try:
            for address in self.options.listen:
                if address.port == 0:
                    reserved.append(reserve_pair(address))
                    listen.append(reserved[-1][2])
                    continue
                kind = held(address)
                if kind is not None:
                    if not self.options.replace:
                        raise AddressInUseError(address, kind)
                    family, host = resolve(address)
                    for holder in instances_on(host, address.port, family, exclude=(os.getpid(),)):
                        self._replacing[holder.pid] = holder
                listen.append(address)
        except BaseException:
            for udp, tcp, _ in reserved:
                udp.close()
                tcp.close()
            raise
        options = self.options
        nsid = (options.instance if options.nsid is None else options.nsid).encode() or None
        secrets = options.cookie_secrets or (new_secret(),)  # one for every worker: a cookie from one is good at all
        config = WorkerConfig(
            tuple(listen),
            self.cache_dir,
            options.tcp,
            options.fast_path,
            options.log_level,
            nsid,
            secrets,
            options.rate_limits,
            rum_addresses(options),
        )
        self.pool = WorkerPool(self.options.workers, config, self.tokens.note)
        self.pool.spawn()
        return reserved

    async def _start_workers(self, reserved: list[tuple[socket.socket, socket.socket, HostPort]]) -> None:
        """Hand the first snapshot to the workers, wait until they answer, then let go of our sockets."""
        assert self.pool is not None
        if not self.options.replace:
            # Again, now that our workers are about to bind: another geolb may have started meanwhile.
            for address in self.options.listen:
                kind = held(address)
                if kind is not None:
                    for udp, tcp, _ in reserved:
                        udp.close()
                        tcp.close()
                    raise AddressInUseError(address, kind)
        self.runtime.on_swap(self.pool.publish)  # what changes meanwhile follows the first generation
        try:
            await self.pool.start(self.runtime.snapshot)
        finally:
            for udp, tcp, _ in reserved:  # once the workers have bound the ports beside them
                udp.close()
                tcp.close()
        self.dns_addresses = [str(address) for address in self.pool.config.listen]

    async def query_stats(self) -> QueryStats:
        """DNS counters of every process that answers."""
        if self.pool is None:
            return QueryStats()
        total = QueryStats()
        for stats in await self.pool.stats():
            total.add(stats)
        return total

    @property
    def answering(self) -> bool:
        """True while at least one DNS worker answers (False before they start); `workers` says if some are missing."""
        return self.pool is not None and self.pool.alive > 0

    @property
    def workers(self) -> WorkersReport:
        """DNS workers wanted, answering and respawned (for /healthz, /v1/status and /metrics)."""
        if self.pool is None:
            return WorkersReport(expected=self.options.workers, alive=0, restarts=0)
        return self.pool.report()

    def ready_line(self) -> str:
        zones = self.runtime.snapshot.zones.zones
        http = f"http {self.http_address}" if self.http_address else "http off"
        count = self.options.workers
        workers = f", {count} DNS worker{'s' if count > 1 else ''}"
        rum = f", rum {self.rum_address}" if self.rum_address else ""
        return (
            f"geolb ready: dns {' '.join(self.dns_addresses)} (udp+tcp), {http}, {len(zones)} zone(s), "
            f"geoip {self.locator.description}{workers}{rum}"
        )

    async def reload(self) -> ZoneSetResult:
        """Re-read the zones directory and swap it in whole; files that fail keep their last good version.

        New check targets are probed once before the new zones go live, so a reload
        never answers with an endpoint nobody has checked.
        """
        async with self._reload_lock:
            current = self.runtime.snapshot.zones
            self._seen_files = fingerprint(self.options.zones_dir)
            result = load_zoneset(self.options.zones_dir, previous=current, served=self._served_serials)
            for warning in result.warnings:
                log.warning("%s", warning)
            for error in result.errors:
                log.error("reload: %s", error)
            if result.zoneset is not current:
                # Region maps first (from disk, or built aside): a pool whose geography changed. A build
                # that fails or whose process dies fails this reload: the zones in use keep serving.
                try:
                    maps = await asyncio.to_thread(self.maps.maps_for, result.zoneset, self.locator)
                except MapBuildError as exc:
                    result = map_build_failed(result, current, exc)
                else:
                    await self._go_live(result.zoneset, maps)
            self.last_reload = result
            self.metrics.reloads.labels("ok" if result.ok else "error").inc()
            serials = ", ".join(f"{z.name} {z.serial}" for z in result.zoneset.zones.values())
            log.info("reload %s: %s", "ok" if result.ok else "with errors", serials)
            problems = f"; {len(result.errors)} error(s), first: {result.errors[0]}" if result.errors else ""
            self.feed.add("reload", f"zones reloaded ({serials}){problems}", state="ok" if result.ok else "error")
            return result

    async def _go_live(self, zoneset: ZoneSet, maps: Mapping[str, RegionMap]) -> None:
        """New check targets probed once, then zones, maps and health published as one generation."""
        wanted = health_keys(zoneset)
        new = wanted - self.health.targets()
        if new:
            self.health.set_targets(self.health.targets() | new)
            await self.prober.check_once(new)
        self.health.set_targets(wanted)
        self.health.set_endpoints(load_rules(zoneset))
        if self.cluster is not None:
            self.cluster.refold()
            self.cluster.sync()
        self.prober.describe(zoneset)
        self.vantage.zones_changed(zoneset, wanted)
        self.rum_share.keep(name for name, pool in zoneset.pools.items() if pool.steering == "latency")
        # Zones, maps, the health the pre-live checks found and the evidence of the pools now served: one generation.
        self.rum_store.retain(zoneset.pools)  # a pool removed takes its measurements with it
        self.runtime.publish(zones=zoneset, health=self.health.view, maps=maps, evidence=self._evidence(zoneset, maps, rebuild=True))
        remember_served(self.cache_dir, zoneset, self._served_serials)
        self.prober.schedule(wanted)

    async def reload_geoip(self) -> bool:
        """Take the GeoIP database file again if it changed since it was last read; True when answers now use it.

        The new database is opened and checked aside and the region maps built from it;
        then it goes live in one generation with them. A file that fails (half-written,
        truncated, corrupt) leaves the one in use answering, and is reported.
        """
        source = self._geoip_source
        if source is None:
            return False
        async with self._reload_lock:
            stamp = file_stamp(source)
            if stamp == self._geoip_seen:
                return False
            self._geoip_seen = stamp
            try:
                locator = await asyncio.to_thread(self.maps.take_database, source)
            except GeoIPError as exc:
                self._geoip_failed(str(exc))
                return False
            if locator.digest == self.locator.digest:
                locator.close()  # the same database again (touched, or put back after a bad one)
                self.geoip.error = self.geoip.error_since = None
                return False
            try:
                maps = await asyncio.to_thread(self.maps.maps_for, self.runtime.snapshot.zones, locator)
            except (GeolbError, OSError) as exc:
                locator.close()
                self.maps.forget_database(locator.digest)
                self._geoip_failed(str(exc) if isinstance(exc, GeoIPError) else f"GeoIP database {source}: {exc}")
                return False
            previous, self.locator = self.locator, locator
            self.runtime.publish(maps=maps)
            previous.close()
            self.geoip = GeoIPReport(loaded=time.time())
            self.metrics.geoip_reloads.labels("ok").inc()
            log.info("GeoIP database loaded: %s", locator.description)
            self.feed.add("geoip", f"GeoIP database loaded: {locator.description}", state="ok")
            self.maps.prune_databases()
            return True

    def _geoip_failed(self, error: str) -> None:
        log.error("GeoIP reload: %s; the database in use keeps answering", error)
        if self.geoip.error is None:
            self.geoip.error_since = time.time()
        self.geoip.error = error
        self.metrics.geoip_reloads.labels("error").inc()
        self.feed.add("geoip", f"{error}; the database in use keeps answering", state="error")

    async def watch_files(self) -> None:
        """Reload when a zone file or the GeoIP database changes, once a burst of writes has settled.

        Nothing a reload meets stops the watching: a failure is logged and the next change is
        still noticed. While region maps are built, a zones directory put back to what is served
        (the same zones, whatever the files' times) cancels the build: a long build of a
        mistake need not run to its end.
        """
        interval = self.options.watch_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self._reload_changed(interval)
            except Exception:
                log.exception("reload after a file change failed; still watching")

    async def _reload_changed(self, interval: float) -> None:
        zones_dir = self.options.zones_dir
        if fingerprint(zones_dir) != self._seen_files:
            await _settled(lambda: fingerprint(zones_dir))
            log.info("zones directory changed: reloading")
            reload = asyncio.ensure_future(self.reload())
            looked_at = fingerprint(zones_dir)
            while not reload.done():
                await asyncio.wait({reload}, timeout=interval)
                if reload.done() or self.maps.builder_pid is None or fingerprint(zones_dir) == looked_at:
                    continue
                looked_at = fingerprint(zones_dir)
                served = self.runtime.snapshot.zones
                again = await asyncio.to_thread(load_zoneset, zones_dir, served)
                if again.zoneset is served and self.maps.cancel_build(unless_for=served):
                    log.warning("zones directory put back as served while region maps were built: build cancelled")
            reload.result()
        if file_stamp(self._geoip_source) != self._geoip_seen:
            await _settled(lambda: file_stamp(self._geoip_source))
            log.info("GeoIP database %s changed: loading it", self._geoip_source)
            await self.reload_geoip()

    async def reload_all(self) -> ZoneSetResult:
        """SIGHUP and POST /v1/reload: the zones, and the GeoIP database if its file changed."""
        result = await self.reload()
        await self.reload_geoip()
        return result

    def reload_in_background(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload_all())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_in_background)
        try:
            await self.start()
            await self._take_over()
        except BaseException:
            await self.stop(quiet=True)  # the error, printed by the caller, is the one line an operator needs
            raise
        if self.options.watch_interval > 0:
            watcher = loop.create_task(self.watch_files(), name="watch zones and GeoIP")
        settle_memory()
        print(self.ready_line(), flush=True)
        await self._stopping.wait()
        if self.options.watch_interval > 0:
            watcher.cancel()
        await self.stop()

    async def stop(self, quiet: bool = False) -> None:
        """Stop taking work, let TCP answers already under way finish (bounded), close."""
        if not quiet:
            log.info("stopping")
        if self.pool is not None:
            self.pool.stopping = True  # a worker that dies from here on (SIGTERM to the whole group) stays dead
        await self.vantage.stop()
        self.rum_share.close()
        if self._cluster_task is not None:
            self._cluster_task.cancel()
            await asyncio.gather(self._cluster_task, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.stop()
        self.feed.close()  # the status pages' event streams end, so the API can stop at once
        for task in (self._load_expiry, self._answer_sampler, self._http_retry, self._rum_upkeep, self._rum_retry):
            if task is not None:
                task.cancel()
        await self._stop_rum()
        if self._load_publish is not None:
            self._load_publish.cancel()
        if self._checks_publish is not None:
            self._checks_publish.cancel()
        self.maps.cancel_build()  # a reload's map build under way would hold the exit until it ends
        if self.pool is not None:
            await self.pool.stop()
        await self.prober.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        self.locator.close()
        self._drop_private_cache()

    # Vantage points and shared steering figures (SPEC §10).

    def _observe_probe(self, key: HealthKey, outcome: Outcome) -> None:
        self.metrics.observe_probe(key, outcome)
        self.vantage.observe(key, outcome)

    def _peer_rum(self, instance: str, pool: str, data: bytes | None) -> None:
        """A peer's RUM export of a pool changed (ClusterMember's on_rum): into the store, then the evidence."""
        self.rum_share.peer_rum(instance, pool, data)

    # Latency steering (SPEC §10): the RUM listener, the measurements it gathers, and the evidence made of them.

    async def _start_rum(self) -> None:
        """The RUM listener on --rum-listen (if set), and the upkeep that saves what it gathers."""
        loop = asyncio.get_running_loop()
        self._rum_upkeep = loop.create_task(self._keep_rum(), name="RUM upkeep")
        address = self.options.rum_listen
        if address is None:
            return
        self.rum = RumListener(self, self.options.rum_trusted_proxies, self.options.rum_rate)
        self._rum_runner = web.AppRunner(self.rum.app(), access_log=None, auto_decompress=False)  # the handler refuses encodings
        await self._rum_runner.setup()
        # --replace: the replaced instance may hold the address until it exits (_take_over binds it then)
        self._rum_deferred = not await self._bind_rum(wait_for_replaced=bool(self._replacing))

    async def _bind_rum(self, wait_for_replaced: bool) -> bool:
        """The RUM listener on --rum-listen; False when the address is held by an instance --replace stops."""
        address = self.options.rum_listen
        assert self._rum_runner is not None and address is not None
        bound = await self._bind_site(self._rum_runner, address, "rum", wait_for_replaced, backlog=1024)
        if bound is not None:
            self.rum_address = bound
        return bound is not None

    async def _stop_rum(self) -> None:
        if self._evidence_rebuild is not None:
            self._evidence_rebuild.cancel()
            self._evidence_rebuild = None
        if self.rum is not None:
            self.rum.close()
        if self._rum_runner is not None:
            await self._rum_runner.cleanup()
            self._rum_runner = None
        if self._rum_saving is not None:  # the periodic save under way: let it end before the last one
            await asyncio.gather(self._rum_saving, return_exceptions=True)
        if self._rum_upkeep is not None:  # started: the store holds what this run gathered (or loaded)
            self._save_rum()

    def _load_rum(self) -> None:
        try:
            self.rum_store.load(Path(self.cache_dir) / RUM_FOLDER)
        except OSError as exc:
            log.warning("RUM measurements not loaded from %s: %s", Path(self.cache_dir) / RUM_FOLDER, exc)

    def _save_rum(self, prepared: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """The store to `<cache>/rum/` (`prepared`: RumStore.saved() taken earlier on the loop)."""
        folder = Path(self.cache_dir) / RUM_FOLDER
        try:
            write_saved(folder, self.rum_store.saved() if prepared is None else prepared)
        except OSError as exc:
            log.warning("RUM measurements not saved under %s: %s", folder, exc)

    async def _save_rum_aside(self) -> None:
        """The periodic save: the store copied on the loop (one moment), compressed and written in a thread, so
        the loop (beacons, the API, the checks) goes on; beacons folded meanwhile are in the next one."""
        try:
            prepared = self.rum_store.saved()  # on the loop: keys and arrays of one moment
            await asyncio.to_thread(self._save_rum, prepared)
        except Exception as exc:  # a full disk, a vanished directory: the next minute tries again
            log.info("RUM measurements not saved this time (%s); again in %g s", exc, RUM_UPKEEP)

    async def _keep_rum(self) -> None:
        """Every RUM_UPKEEP: the evidence again (samples leave the window as time passes), and the store saved."""
        while True:
            await asyncio.sleep(RUM_UPKEEP)
            self._rebuild_evidence()
            self._rum_saving = asyncio.get_running_loop().create_task(self._save_rum_aside(), name="save RUM measurements")
            await asyncio.shield(self._rum_saving)  # stop() waits for it rather than cut it short
            self._rum_saving = None

    def beacon_added(self, pool: str) -> None:
        """The RUM listener folded a beacon of `pool` into the store: exported to the peers soon (with --cluster)."""
        self.rum_share.beacon_added(pool)
        self.rum_changed(pool)

    def rum_changed(self, pool: str) -> None:
        """The store's figures of `pool` changed (a beacon, a peer's export, a vantage report): evidence rebuilt
        soon, once for everything arriving meanwhile (and no sooner than keeps builds under EVIDENCE_SHARE of the loop)."""
        if self._evidence_rebuild is None:
            delay = max(EVIDENCE_DEBOUNCE, self._evidence_cost * (1 - EVIDENCE_SHARE) / EVIDENCE_SHARE)
            self._evidence_rebuild = asyncio.get_running_loop().call_later(delay, self._rebuild_evidence)

    def _rebuild_evidence(self) -> None:
        """Publish the evidence of the pools served when it changed (a pool's evidence version says so)."""
        self._evidence_rebuild = None
        started = time.monotonic()
        snapshot = self.runtime.snapshot
        evidence = self._evidence(snapshot.zones, snapshot.maps)
        current = snapshot.evidence
        digests = {name: answer_digest(found) for name, found in evidence.items()}
        now = time.monotonic()
        self._evidence_cost = now - started
        if evidence.keys() == current.keys() and all(evidence[name].version == current[name].version for name in evidence):
            return
        # Evidence that answers as before (new samples, same orders) waits for the refresh: each publication
        # empties the workers' packet caches and has them lay the evidence over the maps again.
        networks = sum(found.networks for found in evidence.values())
        refresh = EVIDENCE_REFRESH + EVIDENCE_REFRESH_PER_MILLION * networks / 1e6
        if digests == self._evidence_digests and now - self._evidence_published < refresh:
            if self._evidence_rebuild is None:
                self._evidence_rebuild = asyncio.get_running_loop().call_later(
                    self._evidence_published + refresh - now, self._rebuild_evidence
                )
            return
        self._evidence_digests = digests
        self._evidence_published = now
        self.runtime.publish(evidence=evidence)

    def _evidence(self, zones: ZoneSet, maps: Mapping[str, RegionMap], rebuild: bool = False) -> dict[str, PoolEvidence]:
        """Evidence of every `steering: latency` pool that has some; other pools, and pools gone, have none.
        A pool's RUM part is built again only when the store has something new for it (or `rebuild`: a reload
        may have changed the pool's regions or settings)."""
        now = time.time()
        evidence: dict[str, PoolEvidence] = {}
        built: dict[str, PoolEvidence] = {}
        for pool in zones.pools.values():
            if pool.steering != "latency":
                continue
            rum = self._rum_evidence.get(pool.name)
            if rebuild or rum is None or self.rum_store.dirty(pool.name, now):
                try:
                    rum = self.rum_store.evidence(pool, now, self._geo_order(maps.get(pool.name)))
                except Exception:  # a bug in the measurements must cost the pool its evidence, never a reload
                    log.exception("latency evidence of pool %s not built; it answers by distance", pool.name)
                    rum = PoolEvidence.empty(pool.name, tuple(r.name for r in pool.regions))
            built[pool.name] = rum
            found = self._with_vantages(rum)
            if found.networks or found.resolvers or found.countries or found.vantages:
                evidence[pool.name] = found
        self._rum_evidence = built
        return evidence

    def _with_vantages(self, rum: PoolEvidence) -> PoolEvidence:
        """The instances' vantage figures laid over a pool's RUM evidence (steer/vantage.py)."""
        return self.vantage.board.attach(rum)

    @staticmethod
    def _geo_order(region_map: RegionMap | None) -> GeoOrder | None:
        """The §3 rule-2 order of a pool's regions for networks measured for the first time: the margin's first
        incumbent (steer/overlay.py)."""
        if region_map is None:
            return None
        return lambda pool, version, addresses: geo_rankings(region_map, pool, version, addresses)

    def _drop_private_cache(self) -> None:
        if self._private_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)


def saved_evidence(cache_dir: Path, zones: ZoneSet, maps: Mapping[str, RegionMap]) -> dict[str, PoolEvidence]:
    """The evidence of the `steering: latency` pools from the RUM measurements a server saved under `cache_dir`
    (`geolb resolve`: the answers a server with those measurements gives)."""
    store = RumStore()
    store.load(cache_dir / RUM_FOLDER)
    now = time.time()
    evidence: dict[str, PoolEvidence] = {}
    for pool in zones.pools.values():
        if pool.steering == "latency":
            found = store.evidence(pool, now, Server._geo_order(maps.get(pool.name)))
            if found.networks or found.resolvers or found.countries:
                evidence[pool.name] = found
    return evidence


def map_build_failed(result: ZoneSetResult, current: ZoneSet, failure: MapBuildError) -> ZoneSetResult:
    """A reload whose region maps could not be built: the zones in use stay, each pool's file gets the reason."""
    if isinstance(failure, MapBuildCancelled):
        log.warning("reload: %s (the zones directory changed back)", failure)
    else:
        log.error("reload: %s; the zones in use keep serving", failure)
    problems = [ConfigError(pool.where, f"pool '{pool.name}': region map not built: {failure.reason}") for pool in failure.pools]
    failed = dict(result.failed)
    for problem in problems:
        failed.setdefault(problem.where.file, []).append(problem)
    return ZoneSetResult(current, [*result.errors, *problems], result.warnings, failed)


def run_server(options: ServeOptions) -> int:
    """Run until SIGTERM/SIGINT; the exit status for the CLI."""

    async def main() -> None:
        server = Server(options)
        await server.run()

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    except ZoneSetError as exc:
        for problem in exc.problems:
            print(f"geolb: {problem}", file=sys.stderr)
        return 1
    except GeolbError as exc:
        print(f"geolb: {exc}", file=sys.stderr)
        return 1
    return 0
