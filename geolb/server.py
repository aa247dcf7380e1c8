"""Wiring: load zones and GeoIP, bind DNS and HTTP listeners, handle signals, reload, stop."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field

from aiohttp import web

from geolb.config.zoneset import ZoneSetResult, fingerprint, load_zoneset
from geolb.errors import GeolbError, ZoneSetError
from geolb.geo.locate import GeoIPLocator, NoLocator, open_locator
from geolb.handler import QueryHandler
from geolb.health.prober import Prober
from geolb.health.state import HealthState, health_keys
from geolb.http.api import build_app
from geolb.http.metrics import Metrics, server_metrics
from geolb.model import IPAddress
from geolb.net.tcp import DnsStreamProtocol, TcpConnections, TcpLimits
from geolb.net.udp import UdpListener
from geolb.runtime import Runtime

log = logging.getLogger("geolb")
UDP_RECEIVE_BUFFER = 4 << 20  # absorbs bursts while the loop is busy
DRAIN_TIMEOUT = 5.0
WATCH_SETTLE = 0.3  # a changed zones directory must stay unchanged this long before a reload


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """`127.0.0.1:5353`, `[::1]:5353` or `localhost:5353`."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected HOST:PORT (IPv6 as [::1]:5353), got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"write IPv6 addresses in brackets, as [{host}]:{port}")
        return cls(host or "0.0.0.0", int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServeOptions:
    zones_dir: str = "zones"
    geoip: str | None = None
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 5353),)
    http: HostPort | None = HostPort("127.0.0.1", 8053)
    tcp: TcpLimits = field(default_factory=TcpLimits)
    api_token: str | None = None
    probe_concurrency: int = 256
    watch_interval: float = 1.0  # seconds between looks at the zones directory; 0: do not watch
    fast_path: bool = True


def _resolve(address: HostPort) -> tuple[socket.AddressFamily, str]:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise GeolbError(f"cannot listen on {address}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def _bind(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


def bind_pair(address: HostPort) -> tuple[socket.socket, socket.socket, int]:
    """A UDP and a TCP socket on the same port (port 0: any free port that both can have)."""
    family, host = _resolve(address)
    for _attempt in range(20):
        try:
            udp = _bind(family, socket.SOCK_DGRAM, host, address.port)
        except OSError as exc:
            raise GeolbError(f"cannot listen on {address} (udp): {exc.strerror}") from None
        port = int(udp.getsockname()[1])
        try:
            tcp = _bind(family, socket.SOCK_STREAM, host, port)
        except OSError as exc:
            udp.close()
            if address.port == 0 and exc.errno == errno.EADDRINUSE:
                continue  # that free UDP port is taken on TCP: try another
            raise GeolbError(f"cannot listen on {address} (tcp): {exc.strerror}") from None
        return udp, tcp, port
    raise GeolbError(f"cannot find a port free on both UDP and TCP for {address}")


class Server:
    """One geolb process: zones, GeoIP, DNS listeners, HTTP API."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        result = load_zoneset(options.zones_dir)
        if not result.ok:
            raise ZoneSetError(result.errors)
        for warning in result.warnings:
            log.warning("%s", warning)
        self.last_reload = result
        self.locator: GeoIPLocator | NoLocator = open_locator(options.geoip)
        self.runtime = Runtime(result.zoneset)
        self.handler = QueryHandler(self.runtime, self.locator, fast_path=options.fast_path)
        self.metrics = Metrics()
        self.health = HealthState()
        self.health.set_targets(health_keys(result.zoneset))
        self.prober = Prober(
            self.health,
            self.publish_health,
            concurrency=options.probe_concurrency,
            observe=self.metrics.observe_probe,
            on_transition=self.metrics.count_transition,
        )
        self.prober.describe(result.zoneset)
        self.metrics.attach(lambda: server_metrics(self))
        self._reload_lock = asyncio.Lock()
        self.tcp_connections = TcpConnections(options.tcp)
        self.dns_addresses: list[str] = []
        self.http_address: str | None = None
        self._udp: list[UdpListener] = []
        self._tcp_servers: list[asyncio.AbstractServer] = []
        self._http_runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[ZoneSetResult]] = set()

    def force(self, pool: str, region: str, address: IPAddress, up: bool | None) -> None:
        """An operator's forced state (None: back to the checks); it survives reloads."""
        if self.health.force((pool, region, address), up):
            log.warning("%s/%s %s forced %s", pool, region, address, "back to its checks" if up is None else ("up" if up else "down"))
            self.publish_health()

    def publish_health(self) -> None:
        """The prober or a forced state changed health: the next query sees it."""
        if self.health.view is not self.runtime.snapshot.health:
            self.runtime.publish_health(self.health.view)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self.prober.start()
        # SPEC §4: one round of checks before the first answer; first results set the states.
        keys = self.health.targets()
        if keys:
            log.info("checking %d health target(s) before answering", len(keys))
            await self.prober.check_once(keys)
        self.publish_health()
        self.prober.schedule(keys)
        for address in self.options.listen:
            udp, tcp, port = bind_pair(address)
            listener = UdpListener(udp, self.handler)
            listener.start()
            self._udp.append(listener)
            server = await loop.create_server(lambda: DnsStreamProtocol(self.handler, self.tcp_connections), sock=tcp)
            self._tcp_servers.append(server)
            self.dns_addresses.append(str(HostPort(address.host, port)))
        if self.options.http is not None:
            self._http_runner = web.AppRunner(build_app(self), access_log=None)
            await self._http_runner.setup()
            site = web.TCPSite(self._http_runner, self.options.http.host, self.options.http.port)
            try:
                await site.start()
            except OSError as exc:
                raise GeolbError(f"cannot listen on {self.options.http} (http): {exc.strerror}") from None
            bound = self._http_runner.addresses
            port = int(bound[0][1]) if bound else self.options.http.port
            self.http_address = str(HostPort(self.options.http.host, port))

    def ready_line(self) -> str:
        zones = self.runtime.snapshot.zones.zones
        http = f"http {self.http_address}" if self.http_address else "http off"
        return f"geolb ready: dns {' '.join(self.dns_addresses)} (udp+tcp), {http}, {len(zones)} zone(s), geoip {self.locator.description}"

    async def reload(self) -> ZoneSetResult:
        """Re-read the zones directory and swap it in whole; files that fail keep their last good version.

        New check targets are probed once before the new zones go live, so a reload
        never answers with an endpoint nobody has checked.
        """
        async with self._reload_lock:
            current = self.runtime.snapshot.zones
            result = load_zoneset(self.options.zones_dir, previous=current)
            for warning in result.warnings:
                log.warning("%s", warning)
            for error in result.errors:
                log.error("reload: %s", error)
            if result.zoneset is not current:
                wanted = health_keys(result.zoneset)
                new = wanted - self.health.targets()
                if new:
                    self.health.set_targets(self.health.targets() | new)
                    await self.prober.check_once(new)
                self.health.set_targets(wanted)
                self.prober.describe(result.zoneset)
                self.runtime.swap_zones(result.zoneset)
                self.publish_health()
                self.prober.schedule(wanted)
            self.last_reload = result
            self.metrics.reloads.labels("ok" if result.ok else "error").inc()
            serials = ", ".join(f"{z.name} {z.serial}" for z in result.zoneset.zones.values())
            log.info("reload %s: %s", "ok" if result.ok else "with errors", serials)
            return result

    async def watch_zones(self) -> None:
        """Reload when a file in the zones directory changes, once a burst of writes has settled."""
        interval = self.options.watch_interval
        seen = fingerprint(self.options.zones_dir)
        while True:
            await asyncio.sleep(interval)
            current = fingerprint(self.options.zones_dir)
            if current == seen:
                continue
            while True:  # debounce: an editor or a deploy tool may write several times
                await asyncio.sleep(WATCH_SETTLE)
                settled = fingerprint(self.options.zones_dir)
                if settled == current:
                    break
                current = settled
            seen = current
            log.info("zones directory changed: reloading")
            await self.reload()

    def reload_in_background(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_in_background)
        await self.start()
        if self.options.watch_interval > 0:
            watcher = loop.create_task(self.watch_zones(), name="watch zones")
        print(self.ready_line(), flush=True)
        await self._stopping.wait()
        if self.options.watch_interval > 0:
            watcher.cancel()
        await self.stop()

    async def stop(self) -> None:
        """Stop taking work, let TCP answers already under way finish (bounded), close."""
        log.info("stopping")
        for server in self._tcp_servers:
            server.close()
        for listener in self._udp:
            listener.close()
        await self.tcp_connections.drain(DRAIN_TIMEOUT)
        for server in self._tcp_servers:
            await server.wait_closed()
        await self.prober.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()


def run_server(options: ServeOptions) -> int:
    """Run until SIGTERM/SIGINT; the exit status for the CLI."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is optional; asyncio's own loop also works
        loop_factory = None

    async def main() -> None:
        server = Server(options)
        await server.run()

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    except ZoneSetError as exc:
        for problem in exc.problems:
            print(f"geolb: {problem}", file=sys.stderr)
        return 1
    except GeolbError as exc:
        print(f"geolb: {exc}", file=sys.stderr)
        return 1
    return 0
