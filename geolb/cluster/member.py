"""This instance's seat in the cluster: publish its own check results, watch everyone's, share forced states, loads
and latency-steering figures.

Nothing on the query path waits on etcd: what arrives here is folded into the
HealthState (peer votes, forced states, load reports), which publishes a new
HealthView like any health change. With etcd gone, the instance goes on from its
own probes and the last shared state, and reconnects with backoff.

Keys under the prefix (default /geolb):
  instances/<name>                      "{...}"        under this instance's lease
  health/<target>/<name>                "up" | "down"  under this instance's lease
  forced/<pool>/<region>/<address>      "up" | "down"
  load/<pool>/<region>/<address>        {"load": 0.42, "at": <unix time>}
  steering/<pool>/<name>/vantage        VantageReport JSON                        under this instance's lease
  steering/<pool>/<name>/rum            {"chunks": n, "size": s, "sha256": hex}   under this instance's lease
  steering/<pool>/<name>/rum/<i>        bytes i*RUM_CHUNK.. of RumStore.export    under this instance's lease

Steering figures (SPEC §10) are aggregates, never beacons: an instance's own RUM
figures for a pool (RumStore.export) and its vantage report. They go out at most
every STEERING_SPACING seconds, and only when they changed; a large export is cut
into RUM_CHUNK pieces (etcd refuses requests over 1.5 MiB), unchanged pieces are not
sent again, and the head that names the pieces and their digest is written last: a
reader takes a peer's figures only when the pieces it holds match the head, so it
never merges half of two versions. Peers' figures outlive an etcd outage (the last
shared state); a dead peer's vanish with its lease.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from geolb import model
from geolb.cluster.etcd import EtcdClient, EtcdError, KeyValue
from geolb.health.state import EndpointRef, HealthState, HealthView
from geolb.steer.vantage import VantageReport

log = logging.getLogger("geolb.cluster")
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0
STEERING_SPACING = 0.25  # seconds at least between two publications of steering figures
# Bytes a second at most, on average, of steering figures: a big export waits longer before the next. etcd keeps
# every revision until it is compacted: run it with --auto-compaction-retention (e.g. 1h) when RUM is shared.
STEERING_RATE = 512 << 10
RUM_CHUNK = 512 << 10  # bytes of a RUM export per etcd value

OnRum = Callable[[str, str, bytes | None], None]  # (instance, pool, its RumStore.export or None: gone)
OnVantage = Callable[[str, str, VantageReport | None], None]  # (instance, pool, its report or None: gone)


def target_id(key: model.HealthKey) -> str:
    """The check target as every instance names it: scheme, address, port, host, path (SPEC §8)."""
    check = key.check
    text = f"{check.type}|{key.address}|{check.port}|{check.host or ''}|{check.path}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def lease_ttl(zones: model.ZoneSet) -> int:
    """max(3 x the longest check interval, 10 s): how long a stopped instance's votes outlive it."""
    intervals = [e.health.interval for p in zones.pools.values() for r in p.regions for e in r.endpoints]
    return max(10, int(3 * max(intervals, default=0) + 0.999))


@dataclass
class ClusterStatus:
    connected: bool = False
    instances: set[str] = field(default_factory=set)
    last_error: str | None = None
    since: float | None = None  # when the current state (connected or not) began


class ClusterMember:
    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        instance: str,
        health: HealthState,
        changed: Callable[[], None],
        ttl: int = 10,
        *,
        on_rum: OnRum | None = None,
        on_vantage: OnVantage | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.instance = instance
        self.health = health
        self.changed = changed  # the shared view changed: publish health
        self.ttl = ttl
        self.status = ClusterStatus()
        self._lease = 0
        self._published: dict[str, bool] = {}  # target -> what etcd holds of ours
        self._votes: dict[str, dict[str, bool]] = {}  # target -> instance -> up, peers only
        self._wake = asyncio.Event()
        self._stopping = False
        # Steering figures (SPEC §10): ours as the server last gave them, and what etcd holds of them.
        self.on_rum = on_rum  # a peer's RUM figures for a pool changed (whole, checked against their digest)
        self.on_vantage = on_vantage  # a peer's vantage report for a pool changed
        self._own_rum: dict[str, bytes | None] = {}  # pool -> export; None: withdraw
        self._own_vantage: dict[str, VantageReport | None] = {}
        self._sent_rum: dict[str, list[str]] = {}  # pool -> digest of each piece etcd holds, then of the whole
        self._sent_vantage: dict[str, bytes] = {}
        self._steering_wake = asyncio.Event()
        # Peers' steering keys as etcd holds them, and what was handed to the callbacks.
        self._peer_heads: dict[tuple[str, str], tuple[int, str]] = {}  # (pool, instance) -> (pieces, sha256)
        self._peer_pieces: dict[tuple[str, str], dict[int, bytes]] = {}
        self._peer_vantage_raw: dict[tuple[str, str], bytes] = {}
        self._peer_rum: dict[tuple[str, str], str] = {}  # -> sha256 of what on_rum was given
        self._peer_vantage: dict[tuple[str, str], VantageReport] = {}

    # --- what the server calls ------------------------------------------------------------

    def sync(self) -> None:
        """Our check results changed (or may have): publish the ones etcd does not hold yet."""
        self._wake.set()

    def publish_rum(self, pool: str, data: bytes | None) -> None:
        """This instance's own RUM figures for a pool (RumStore.export), None to withdraw them.
        Cheap: the latest is kept and goes out within STEERING_SPACING when it differs from what etcd holds."""
        self._own_rum[pool] = data
        self._steering_wake.set()

    def publish_vantage(self, pool: str, report: VantageReport | None) -> None:
        """This instance's vantage report for a pool, None to withdraw it; sent as publish_rum's are."""
        self._own_vantage[pool] = report
        self._steering_wake.set()

    def withdraw_steering(self, keep: Iterable[str]) -> None:
        """Withdraw our figures of the pools not in `keep` (gone in a reload)."""
        wanted = set(keep)
        for pool in set(self._own_rum) | set(self._sent_rum):
            if pool not in wanted:
                self.publish_rum(pool, None)
        for pool in set(self._own_vantage) | set(self._sent_vantage):
            if pool not in wanted:
                self.publish_vantage(pool, None)

    def peer_vantages(self) -> dict[tuple[str, str], VantageReport]:
        """(pool, instance) -> the peer's latest report, as handed to on_vantage."""
        return dict(self._peer_vantage)

    async def put_forced(self, ref: EndpointRef, up: bool | None) -> None:
        key = self._ref_key("forced", ref)
        if up is None:
            await self.client.delete(key)
        else:
            await self.client.put(key, "up" if up else "down")

    async def put_load(self, ref: EndpointRef, load: float, at: float) -> None:
        await self.client.put(self._ref_key("load", ref), json.dumps({"load": load, "at": at}))

    async def stop(self) -> None:
        self._stopping = True
        if self._lease and self.status.connected:
            with contextlib.suppress(EtcdError):
                await self.client.revoke(self._lease)  # leave the quorum now, not when the lease ends
        await self.client.close()

    async def connected(self, timeout: float) -> bool:
        """Wait (bounded) for the first join, so that forced states are known before the first answer."""
        deadline = time.monotonic() + timeout
        while not self.status.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.status.connected

    def views(self, key: model.HealthKey) -> dict[str, bool]:
        """Each live instance's view of a check (ours included, once checked), by instance name."""
        views = self.health.peer_votes(key)
        own = self.health.check(key)
        if own is not None and own.checked:
            views[self.instance] = own.up
        return dict(sorted(views.items()))

    def refold(self) -> None:
        """The zones changed (a reload): decide the new set of checks from the votes already known."""
        self._fold(self.health.view)

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Join, follow and republish until cancelled; reconnect with backoff whenever etcd fails."""
        backoff = BACKOFF_FIRST
        while not self._stopping:
            try:
                await self._session()
            except EtcdError as exc:
                self._disconnected(str(exc))
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2) if not self.status.connected else BACKOFF_FIRST

    async def _session(self) -> None:
        self._lease = await self.client.grant(self.ttl)
        await self.client.put(f"{self.prefix}/instances/{self.instance}", json.dumps({"since": time.time()}), self._lease)
        self._published.clear()
        self._sent_rum.clear()  # under the new lease, all of it again
        self._sent_vantage.clear()
        await self._publish_own()
        await self._publish_steering()
        kvs, revision = await self.client.range_prefix(self.prefix + "/")
        self._load_all(kvs)
        if not self.status.connected:
            log.warning("cluster: connected to etcd (%s), %d instance(s)", ", ".join(self.client.endpoints), len(self.status.instances))
        self.status.connected, self.status.last_error, self.status.since = True, None, time.time()
        tasks = [
            asyncio.create_task(self._follow(revision + 1), name="cluster watch"),
            asyncio.create_task(self._keep_lease(), name="cluster lease"),
            asyncio.create_task(self._publisher(), name="cluster publish"),
            asyncio.create_task(self._steering_publisher(), name="cluster steering"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the EtcdError that ended the session
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _disconnected(self, error: str) -> None:
        if self.status.connected or self.status.last_error is None:
            log.warning("cluster: etcd unreachable (%s); answering from own checks and the last shared state", error)
            self.status.since = time.time()
        self.status.connected, self.status.last_error = False, error
        if self._votes and self.status.since is not None and time.time() - self.status.since > self.ttl:
            # Past the lease: etcd would have dropped a dead peer's votes by now, and we cannot tell
            # who is alive. Decide from our own checks until we are back.
            log.warning("cluster: away longer than the lease (%d s): deciding from own checks alone", self.ttl)
            before = self.health.view
            self._votes.clear()
            self.status.instances = set()
            self._fold(before)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.ttl / 3))
            if await self.client.keepalive(self._lease) <= 0:
                raise EtcdError("lease ended (etcd was away longer than the lease)")
            self._wake.set()  # and republish anything that failed to go out

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._publish_own()

    async def _publish_own(self) -> None:
        changed: dict[str, bool] = {}
        for key in self.health.targets():
            check = self.health.check(key)
            if check is None or not check.checked:
                continue
            target = target_id(key)
            if self._published.get(target) != check.up:
                changed[target] = check.up
        items = [(f"{self.prefix}/health/{target}/{self.instance}", "up" if up else "down") for target, up in changed.items()]
        await self.client.put_many(items, self._lease)
        self._published.update(changed)

    async def _steering_publisher(self) -> None:
        while True:
            await self._steering_wake.wait()
            self._steering_wake.clear()
            sent = await self._publish_steering()
            await asyncio.sleep(max(STEERING_SPACING, sent / STEERING_RATE))

    async def _publish_steering(self) -> int:
        """Send what changed of our steering figures; the bytes sent."""
        sent = 0
        for pool, report in list(self._own_vantage.items()):
            key = f"{self.prefix}/steering/{pool}/{self.instance}/vantage"
            if report is None:
                if self._sent_vantage.pop(pool, None) is not None:
                    await self.client.delete(key)
                continue
            data = report.to_bytes()
            if self._sent_vantage.get(pool) != data:
                await self.client.put(key, data, self._lease)
                self._sent_vantage[pool] = data
                sent += len(data)
        for pool, export in list(self._own_rum.items()):
            sent += await self._publish_rum(pool, export)
        # Withdrawn and gone from etcd: nothing left to remember (unless the server gave something new meanwhile).
        for own, held in ((self._own_vantage, self._sent_vantage), (self._own_rum, self._sent_rum)):
            for pool in [p for p, value in own.items() if value is None and p not in held]:
                del own[pool]
        return sent

    async def _publish_rum(self, pool: str, export: bytes | None) -> int:
        key = f"{self.prefix}/steering/{pool}/{self.instance}/rum"
        held = self._sent_rum.get(pool, [])
        if export is None:
            if self._sent_rum.pop(pool, None) is not None:
                await self.client.delete(key)
                for index in range(len(held) - 1):
                    await self.client.delete(f"{key}/{index}")
            return 0
        digest = hashlib.sha256(export).hexdigest()
        if held and held[-1] == digest:
            return 0
        pieces = [export[start : start + RUM_CHUNK] for start in range(0, len(export), RUM_CHUNK)]
        digests = [hashlib.sha256(piece).hexdigest() for piece in pieces]
        sent = 0
        self._sent_rum[pool] = []  # unknown until the head is written: a failure below sends everything again
        for index, piece in enumerate(pieces):
            if index >= len(held) - 1 or held[index] != digests[index]:
                await self.client.put(f"{key}/{index}", piece, self._lease)
                sent += len(piece)
        head = json.dumps({"chunks": len(pieces), "size": len(export), "sha256": digest})
        await self.client.put(key, head, self._lease)
        for index in range(len(pieces), len(held) - 1):
            await self.client.delete(f"{key}/{index}")
        self._sent_rum[pool] = [*digests, digest]
        return sent + len(head)

    async def _follow(self, revision: int) -> None:
        async for events in self.client.watch(self.prefix + "/", revision):
            before = self.health.view
            touched: set[tuple[str, str]] = set()
            for event in events:
                self._apply(event.key, event.value if event.kind == "PUT" else None, touched)
            self._fold(before)
            self._settle_steering(touched)

    # --- applying what etcd holds -----------------------------------------------------------

    def _load_all(self, kvs: list[KeyValue]) -> None:
        before = self.health.view
        self._votes.clear()
        self.status.instances = set()
        forced_before = {ref for ref, _ in self.health.forced_states()}
        seen_forced: set[EndpointRef] = set()
        # Steering: what etcd holds now replaces what we knew; whoever vanished meanwhile is settled as gone.
        touched = set(self._peer_rum) | set(self._peer_vantage)
        self._peer_heads.clear()
        self._peer_pieces.clear()
        self._peer_vantage_raw.clear()
        for kv in kvs:
            ref = self._apply(kv.key, kv.value, touched)
            if ref is not None:
                seen_forced.add(ref)
        for ref in forced_before - seen_forced:
            self.health.force(ref, None)  # cleared elsewhere while we were away
        self._fold(before)
        self._settle_steering(touched)

    def _apply(self, key: str, value: bytes | None, touched: set[tuple[str, str]]) -> EndpointRef | None:
        """One key's new value (None: deleted). Returns the endpoint when it is a forced state that is set;
        adds the (pool, instance) of a steering key to `touched`."""
        parts = key[len(self.prefix) + 1 :].split("/")
        kind = parts[0]
        if kind == "steering" and len(parts) in (4, 5):
            self._apply_steering(parts[1], parts[2], parts[3:], value, touched)
        elif kind == "instances" and len(parts) == 2:
            if value is None:
                self.status.instances.discard(parts[1])
            else:
                self.status.instances.add(parts[1])
        elif kind == "health" and len(parts) == 3:
            target, instance = parts[1], parts[2]
            if instance == self.instance:
                return None  # our own: we know better than etcd
            votes = self._votes.setdefault(target, {})
            if value is None:
                votes.pop(instance, None)
            else:
                votes[instance] = value == b"up"
        elif kind in ("forced", "load") and len(parts) == 4:
            ref = _ref(parts[1:])
            if ref is None:
                return None
            if kind == "forced":
                self.health.force(ref, None if value is None else value == b"up")
                return ref if value is not None else None
            if value is not None:
                try:
                    report = json.loads(value)
                    self.health.push_load(ref, float(report["load"]), float(report["at"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("cluster: unreadable load report at %s", key)
        return None

    def _fold(self, before: HealthView) -> None:
        """Peers' votes, from live instances only, into the health state; publish if the view changed since `before`."""
        live = self.status.instances
        by_key: dict[model.HealthKey, dict[str, bool]] = {}
        for key in self.health.targets():
            votes = self._votes.get(target_id(key))
            if votes:
                alive = {name: up for name, up in votes.items() if name in live}
                if alive:
                    by_key[key] = alive
        self.health.set_peer_votes(by_key)
        after = self.health.view
        if after is before:
            return
        for key in after.down - before.down:
            log.warning("cluster: %s down by %s quorum of %d instance(s)", target_name(key), key.check.quorum, 1 + len(by_key.get(key, {})))
        for key in before.down - after.down:
            log.warning("cluster: %s up by %s quorum", target_name(key), key.check.quorum)
        self.changed()

    def _apply_steering(self, pool: str, instance: str, rest: list[str], value: bytes | None, touched: set[tuple[str, str]]) -> None:
        if instance == self.instance:
            return  # ours: we know better than etcd
        peer = (pool, instance)
        if rest == ["vantage"]:
            if value is None:
                self._peer_vantage_raw.pop(peer, None)
            else:
                self._peer_vantage_raw[peer] = value
        elif rest == ["rum"]:
            if value is None:
                self._peer_heads.pop(peer, None)
            else:
                try:
                    head = json.loads(value)
                    self._peer_heads[peer] = (int(head["chunks"]), str(head["sha256"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("cluster: unreadable RUM head at steering/%s/%s/rum", pool, instance)
                    self._peer_heads.pop(peer, None)
        elif len(rest) == 2 and rest[0] == "rum" and rest[1].isdigit():
            pieces = self._peer_pieces.setdefault(peer, {})
            if value is None:
                pieces.pop(int(rest[1]), None)
                if not pieces:
                    del self._peer_pieces[peer]
            else:
                pieces[int(rest[1])] = value
        else:
            return
        touched.add(peer)

    def _settle_steering(self, touched: set[tuple[str, str]]) -> None:
        """Hand the peers' steering figures that changed to the callbacks: whole RUM exports only."""
        for peer in sorted(touched):
            pool, instance = peer
            raw = self._peer_vantage_raw.get(peer)
            report: VantageReport | None = None
            if raw is not None:
                try:
                    report = VantageReport.from_bytes(instance, raw)
                except ValueError as exc:
                    log.warning("cluster: unreadable vantage report of %s for pool %s: %s", instance, pool, exc)
            if report != self._peer_vantage.get(peer):
                if report is None:
                    del self._peer_vantage[peer]
                else:
                    self._peer_vantage[peer] = report
                if self.on_vantage is not None:
                    self.on_vantage(instance, pool, report)
            head = self._peer_heads.get(peer)
            if head is None:
                if self._peer_rum.pop(peer, None) is not None and self.on_rum is not None:
                    self.on_rum(instance, pool, None)
                continue
            count, digest = head
            if digest == self._peer_rum.get(peer):
                continue
            pieces = self._peer_pieces.get(peer, {})
            if any(index not in pieces for index in range(count)):
                continue  # the rest is on its way
            data = b"".join(pieces[index] for index in range(count))
            if hashlib.sha256(data).hexdigest() != digest:
                continue  # pieces of two versions: the head of the newer one is on its way
            self._peer_rum[peer] = digest
            if self.on_rum is not None:
                self.on_rum(instance, pool, data)

    def _ref_key(self, kind: str, ref: EndpointRef) -> str:
        pool, region, address = ref
        return f"{self.prefix}/{kind}/{pool}/{region}/{address}"


def target_name(key: model.HealthKey) -> str:
    return f"{key.check.type}://{key.address}:{key.check.port}{key.check.path}"


def _ref(parts: list[str]) -> EndpointRef | None:
    try:
        return parts[0], parts[1], ipaddress.ip_address(parts[2])
    except ValueError:
        return None
