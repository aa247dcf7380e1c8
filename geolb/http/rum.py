"""The RUM listener (SPEC §10): GET /rum.js and POST /v1/rum, nothing else; beacons validated, attributed, folded in.

A beacon speaks for the network it came from (the peer, or behind a trusted proxy the
left-most X-Forwarded-For address not in a trusted CIDR), never for anything its body
names. The listener runs in the main process beside the API, on an address of its own:
the API is never reachable through it. What it does per beacon is kept small (one JSON
parse, a few dict look-ups, one GeoIP look-up, RumStore.add); the evidence is rebuilt
off this path (the server debounces `beacon_added`).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import math
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from geolb import model
from geolb.geo.locate import Locator
from geolb.runtime import Runtime
from geolb.steer.aggregate import RumStore
from geolb.steer.evidence import V4_PREFIX, V6_PREFIX
from geolb.steer.tokens import TokenBook

MAX_BODY = 4096  # bytes of a beacon
MAX_RTT_MS = 60_000.0
MAX_REGIONS = 1000  # a pool's most (SPEC §7): no beacon lists more before its pool is even known
TOKEN = re.compile(r"[a-z0-9-]{1,63}")
BEACON_KEYS = frozenset({"zone", "pool", "token", "rtt"})
NUMBERS = (int, float)
TOKEN_WAIT = 1.0  # seconds a beacon with a token not yet seen waits for the DNS workers' sighting of it
TOKEN_RETRY = 0.1
TOKEN_WAITING = 100_000  # beacons held for their tokens at most; more go in at once, without a resolver
RATE_PRUNE = 60.0  # seconds between sweeps of idle networks out of the rate table
V6_KEY = 1 << V6_PREFIX  # above every IPv6 /48 key: IPv4 and IPv6 keys never meet
COUNTRY_CACHE = 100_000  # networks whose GeoIP country is remembered (forgotten all at once when full)
RESULTS = ("accepted", "bad_request", "not_found", "rate_limited")


class RumServer(Protocol):
    """What the listener reads and calls in the running server (geolb.server.Server)."""

    runtime: Runtime
    locator: Locator
    tokens: TokenBook
    rum_store: RumStore

    def beacon_added(self, pool: str) -> None: ...


@dataclass(frozen=True)
class Beacon:
    """A valid beacon: its pool, and region name -> ms (every region one of the pool's)."""

    pool: model.Pool
    rtt: Mapping[str, float]
    token: str | None


class Refusal(Exception):
    """A beacon refused: the HTTP status, the counter it goes to, and why."""

    def __init__(self, status: int, result: str, message: str, pool: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.result = result
        self.pool = pool  # the pool it named, when that pool exists: counted per pool too


def bad(message: str, pool: str | None = None) -> Refusal:
    return Refusal(400, "bad_request", message, pool)


def not_found(message: str, pool: str | None = None) -> Refusal:
    return Refusal(404, "not_found", message, pool)


def parse_beacon(body: bytes, zones: model.ZoneSet) -> Beacon:
    """A beacon's body -> Beacon, or Refusal: 400 for anything malformed, 404 for a zone, pool or region not served."""
    if len(body) > MAX_BODY:
        raise bad(f"body over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("body is not JSON") from None
    if not isinstance(data, dict):
        raise bad('body must be a JSON object {"zone", "pool", "token", "rtt"}')
    unknown = data.keys() - BEACON_KEYS
    if unknown:
        raise bad(f"unknown key(s): {', '.join(sorted(unknown))}")
    zone_name, pool_name, token, rtt = data.get("zone"), data.get("pool"), data.get("token"), data.get("rtt")
    if not isinstance(zone_name, str) or not zone_name or len(zone_name) > 255:
        raise bad("zone must be a zone name")
    if not isinstance(pool_name, str) or not pool_name or len(pool_name) > 255:
        raise bad("pool must be a pool name")
    if token is not None and (not isinstance(token, str) or not TOKEN.fullmatch(token)):
        raise bad("token must be one DNS label: 1-63 of a-z, 0-9, '-'")
    if not isinstance(rtt, dict) or not rtt:
        raise bad('rtt must be an object {"REGION": ms, ...} with at least one region')
    if len(rtt) > MAX_REGIONS:
        raise bad("rtt names more regions than a pool has")
    for region_name, ms in rtt.items():
        # exactly int or float: JSON's true is a bool, an int to isinstance, and no time
        if type(ms) not in NUMBERS or not 0 < ms <= MAX_RTT_MS or not math.isfinite(ms):
            raise bad(f"rtt of {region_name!r} must be a number of milliseconds, 0 < ms <= {MAX_RTT_MS:g}")
    zone = zones.zones.get(zone_name.lower().rstrip(".") + ".")
    if zone is None:
        raise not_found(f"no zone {zone_name!r} is served here")
    pool = zone.pools.get(pool_name)
    if pool is None:
        raise not_found(f"zone {zone.name} has no pool {pool_name!r}")
    if len(rtt) > len(pool.regions):
        raise bad(f"rtt names {len(rtt)} regions; pool {pool.name!r} has {len(pool.regions)}", pool.name)
    names = region_names(pool)
    for region_name in rtt:
        if region_name not in names:
            raise not_found(f"pool {pool.name!r} has no region {region_name!r}", pool.name)
    return Beacon(pool, {name: float(ms) for name, ms in rtt.items()}, token)


def region_names(pool: model.Pool) -> frozenset[str]:
    """The pool's region names, worked out once per Pool object (a reload makes new ones)."""
    names: frozenset[str] | None = pool.__dict__.get("_rum_region_names")
    if names is None:
        names = frozenset(region.name for region in pool.regions)
        object.__setattr__(pool, "_rum_region_names", names)
    return names


def parse_address(text: str) -> model.IPAddress:
    """ipaddress.ip_address, but parsed in C (inet_pton): two parses a beacon add up; ValueError when not one."""
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
    except OSError:
        return ipaddress.ip_address(text)  # a scoped IPv6 address ("fe80::1%eth0"), or the error that says why not


def _address(text: str) -> model.IPAddress | None:
    """One X-Forwarded-For entry: an address, perhaps with a port ("192.0.2.1:443", "[2001:db8::1]:443"); None if not."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return _plain(parse_address(text))
    except ValueError:
        return None


def _plain(address: model.IPAddress) -> model.IPAddress:
    """An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: model.IPAddress, forwarded_for: Iterable[str], trusted: tuple[model.IPNetwork, ...]) -> model.IPAddress | None:
    """The address a beacon speaks for (SPEC §10): the peer, or, when the peer is a trusted proxy, the left-most
    X-Forwarded-For address not in a trusted CIDR (None when it names none: nobody to speak for)."""
    peer = _plain(peer)
    if not any(peer in network for network in trusted):
        return peer
    for header in forwarded_for:
        for entry in header.split(","):
            address = _address(entry)
            if address is not None and not any(address in network for network in trusted):
                return address
    return None


def network_key(address: model.IPAddress) -> int:
    """The client network a beacon measures (IPv4 /24, IPv6 /48) as one int: cheap to hash, one per network."""
    if address.version == 4:
        return int(address) >> (32 - V4_PREFIX)
    return (int(address) >> (128 - V6_PREFIX)) | V6_KEY


def network_of(key: int) -> model.IPNetwork:
    """The network a `network_key` stands for."""
    if key & V6_KEY:
        return ipaddress.IPv6Network(((key & ~V6_KEY) << (128 - V6_PREFIX), V6_PREFIX))
    return ipaddress.IPv4Network((key << (32 - V4_PREFIX), V4_PREFIX))


class BeaconRate:
    """At most `rate` beacons a minute from one network (a token bucket per /24 or /48, refilled at rate/60 a second)."""

    def __init__(self, rate: int) -> None:
        self.rate = float(rate)
        self._buckets: dict[int, tuple[float, float]] = {}  # network_key -> (tokens, when)
        self._pruned = 0.0

    def allow(self, network: int, now: float) -> bool:
        if self.rate <= 0:  # --rum-rate 0: no limit
            return True
        if now - self._pruned > RATE_PRUNE:
            self._prune(now)
        tokens, when = self._buckets.get(network, (self.rate, now))
        tokens = min(self.rate, tokens + (now - when) * self.rate / 60.0)
        if tokens < 1.0:
            self._buckets[network] = (tokens, now)
            return False
        self._buckets[network] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float) -> None:
        """Drop the networks whose bucket is full again (an empty one refills in a minute): as if never seen."""
        self._pruned = now
        self._buckets = {net: (tokens, when) for net, (tokens, when) in self._buckets.items() if now - when < 60.0}

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class BeaconCounts:
    """Beacons by result ("accepted", "bad_request", "not_found", "rate_limited"): all, and per pool named."""

    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    pools: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, result: str, pool: str | None) -> None:
        self.total[result] += 1
        if pool is not None:
            counts = self.pools.get(pool)
            if counts is None:
                counts = self.pools[pool] = dict.fromkeys(RESULTS, 0)
            counts[result] += 1

    def of_pool(self, pool: str) -> dict[str, int]:
        return dict(self.pools.get(pool) or dict.fromkeys(RESULTS, 0))


@dataclass(frozen=True)
class Pending:
    """A beacon whose token's sighting has not reached this process yet."""

    beacon: Beacon
    network: model.IPNetwork
    country: str | None
    at: float  # time.time() the beacon arrived (its samples' time)
    until: float  # time.monotonic() after which it goes in without a resolver


class RumListener:
    """The listener's state: counters, rate table, beacons waiting for their token; `app()` gives its routes."""

    def __init__(self, server: RumServer, trusted: tuple[model.IPNetwork, ...], rate: int) -> None:
        self.server = server
        self.trusted = tuple(trusted)
        self.rate = BeaconRate(rate)
        self.counts = BeaconCounts()
        self.script = RumScript.load()
        self._pending: list[Pending] = []
        self._retry: asyncio.TimerHandle | None = None  # while beacons wait for their tokens
        self._countries: dict[int, str | None] = {}  # network_key -> country, from the locator below
        self._countries_of: Locator | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/rum.js", self.rum_js, allow_head=False)  # SPEC §10: GET /rum.js and POST /v1/rum only
        app.router.add_post("/v1/rum", self.beacon)
        app.router.add_route("OPTIONS", "/v1/rum", self.preflight)
        # Anything else, a wrong method on these paths too, is 404: the listener shows nothing else exists.
        # (A route, not a middleware: a middleware would cost every beacon a few microseconds.)
        app.router.add_route("*", "/{anything:.*}", _not_found)
        return app

    async def rum_js(self, request: web.Request) -> web.Response:
        """The script; with ?zone=&pool= the same script with that pool's regions and rum_urls in it."""
        zone_name, pool_name = request.query.get("zone"), request.query.get("pool")
        if zone_name is None and pool_name is None:
            body, etag = self.script.body, self.script.etag
        else:
            zone = self.server.runtime.snapshot.zones.zones.get((zone_name or "").lower().rstrip(".") + ".")
            pool = None if zone is None else zone.pools.get(pool_name or "")
            if zone is None or pool is None:
                return web.Response(status=404, text="/* geolb: no such zone or pool */\n", content_type="text/javascript")
            body = self.script.configured(zone, pool)
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=300",
            "Access-Control-Allow-Origin": "*",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="text/javascript", charset="utf-8", headers=headers)

    async def preflight(self, request: web.Request) -> web.Response:
        """CORS preflight of a beacon a site posts as application/json (rum.js itself sends simple requests)."""
        return web.Response(status=204, headers=_CORS_PREFLIGHT)

    async def beacon(self, request: web.Request) -> web.Response:
        try:
            if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
                raise bad("a beacon is sent as it is, without Content-Encoding")  # sendBeacon never compresses
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise bad(f"body over {MAX_BODY} bytes") from None
            server = self.server
            beacon = parse_beacon(body, server.runtime.snapshot.zones)
            address = client_address(
                parse_address(request.remote or "0.0.0.0"), request.headers.getall("X-Forwarded-For", ()), self.trusted
            )
            if address is None:
                raise bad("the trusted proxy named no client address in X-Forwarded-For", beacon.pool.name)
            key = network_key(address)
            if not self.rate.allow(key, time.monotonic()):
                network = network_of(key)
                raise Refusal(429, "rate_limited", f"more than {self.rate.rate:g} beacons a minute from {network}", beacon.pool.name)
        except Refusal as refusal:
            self.counts.count(refusal.result, refusal.pool)
            return web.json_response({"error": str(refusal)}, status=refusal.status, headers=_CORS)
        self.counts.count("accepted", beacon.pool.name)
        network = network_of(key)
        self.take(beacon, network, self._country(key, network), time.time())
        return web.Response(status=204, headers=_CORS)

    def _country(self, key: int, network: model.IPNetwork) -> str | None:
        """The network's GeoIP country (for country evidence), remembered per network while the database answers."""
        locator = self.server.locator
        if locator is not self._countries_of:
            self._countries_of = locator
            self._countries.clear()
        try:
            return self._countries[key]
        except KeyError:
            pass
        if len(self._countries) >= COUNTRY_CACHE:
            self._countries.clear()
        country = self._countries[key] = locator.locate(network.network_address).country
        return country

    def take(self, beacon: Beacon, network: model.IPNetwork, country: str | None, now: float) -> None:
        """Into the store: with the resolver that looked the token up, or, until it is seen (workers report
        sightings in batches), held back for at most TOKEN_WAIT."""
        resolver = None
        if beacon.token is not None:
            sighting = self.server.tokens.find(beacon.token)
            if sighting is None and len(self._pending) < TOKEN_WAITING:
                self._hold(Pending(beacon, network, country, now, time.monotonic() + TOKEN_WAIT))
                return
            resolver = None if sighting is None else sighting.resolver
        self.server.rum_store.add(beacon.pool, network, beacon.rtt, now, country=country, resolver=resolver)
        self.server.beacon_added(beacon.pool.name)

    def _hold(self, pending: Pending) -> None:
        self._pending.append(pending)
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(TOKEN_RETRY, self._release)

    def _release(self) -> None:
        """Beacons whose token is now seen, or that waited long enough, go into the store."""
        self._retry = None
        now = time.monotonic()
        waiting: list[Pending] = []
        for pending in self._pending:
            beacon = pending.beacon
            assert beacon.token is not None
            sighting = self.server.tokens.find(beacon.token)
            if sighting is None and now < pending.until:
                waiting.append(pending)
                continue
            resolver = None if sighting is None else sighting.resolver
            # A reload while it waited may have changed or removed the pool: the current one, and its regions only.
            pool = self.server.runtime.snapshot.zones.pools.get(beacon.pool.name)
            rtt = {name: ms for name, ms in beacon.rtt.items() if pool is not None and pool.region(name) is not None}
            if pool is None or not rtt:
                continue
            self.server.rum_store.add(pool, pending.network, rtt, pending.at, country=pending.country, resolver=resolver)
            self.server.beacon_added(pool.name)
        self._pending = waiting
        if waiting:
            self._retry = asyncio.get_running_loop().call_later(TOKEN_RETRY, self._release)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def report(self) -> dict[str, Any]:
        """For /v1/status: beacons by result, networks in the rate table, beacons waiting for their token."""
        return {"beacons": dict(self.counts.total), "rate_limited_networks": len(self.rate), "waiting_for_token": len(self._pending)}


_CORS = {"Access-Control-Allow-Origin": "*"}
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


async def _not_found(request: web.Request) -> web.Response:
    return web.json_response({"error": "not found"}, status=404)


@dataclass(frozen=True)
class RumScript:
    """rum.js from package data, served without its comment lines and indentation (well under 4 kB);
    `configured` puts a pool's zone, regions and rum_urls in its CONFIG slot."""

    template: str
    body: bytes
    etag: str

    SLOT = "/*CONFIG*/null"

    @classmethod
    def load(cls) -> RumScript:
        source = resources.files("geolb").joinpath("steer/rum.js").read_text(encoding="utf-8")
        lines = (line.strip() for line in source.splitlines())
        template = "".join(line + "\n" for line in lines if line and not line.startswith("//"))
        if cls.SLOT not in template:
            raise RuntimeError("geolb/steer/rum.js has no config slot")
        body = template.encode()
        return cls(template, body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')

    def configured(self, zone: model.Zone, pool: model.Pool) -> bytes:
        config = {
            "zone": zone.name.rstrip("."),
            "pool": pool.name,
            "rum_name": None if zone.rum_name is None else zone.rum_name.rstrip("."),
            "regions": {region.name: region.rum_url for region in pool.regions if region.rum_url},
        }
        text = json.dumps(config, separators=(",", ":")).replace("<", "\\u003c")
        return self.template.replace(self.SLOT, text).encode()
