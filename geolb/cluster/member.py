"""This instance's seat in the cluster: publish its own check results, watch everyone's, share forced states and loads.

Nothing on the query path waits on etcd: what arrives here is folded into the
HealthState (peer votes, forced states, load reports), which publishes a new
HealthView like any health change. With etcd gone, the instance goes on from its
own probes and the last shared state, and reconnects with backoff.

Keys under the prefix (default /geolb):
  instances/<name>                      "{...}"        under this instance's lease
  health/<target>/<name>                "up" | "down"  under this instance's lease
  forced/<pool>/<region>/<address>      "up" | "down"
  load/<pool>/<region>/<address>        {"load": 0.42, "at": <unix time>}
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from geolb import model
from geolb.cluster.etcd import EtcdClient, EtcdError, KeyValue
from geolb.health.state import EndpointRef, HealthState, HealthView

log = logging.getLogger("geolb.cluster")
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0


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

    # --- what the server calls ------------------------------------------------------------

    def sync(self) -> None:
        """Our check results changed (or may have): publish the ones etcd does not hold yet."""
        self._wake.set()

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
        await self._publish_own()
        kvs, revision = await self.client.range_prefix(self.prefix + "/")
        self._load_all(kvs)
        if not self.status.connected:
            log.warning("cluster: connected to etcd (%s), %d instance(s)", ", ".join(self.client.endpoints), len(self.status.instances))
        self.status.connected, self.status.last_error, self.status.since = True, None, time.time()
        tasks = [
            asyncio.create_task(self._follow(revision + 1), name="cluster watch"),
            asyncio.create_task(self._keep_lease(), name="cluster lease"),
            asyncio.create_task(self._publisher(), name="cluster publish"),
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

    async def _follow(self, revision: int) -> None:
        async for events in self.client.watch(self.prefix + "/", revision):
            before = self.health.view
            for event in events:
                self._apply(event.key, event.value if event.kind == "PUT" else None)
            self._fold(before)

    # --- applying what etcd holds -----------------------------------------------------------

    def _load_all(self, kvs: list[KeyValue]) -> None:
        before = self.health.view
        self._votes.clear()
        self.status.instances = set()
        forced_before = {ref for ref, _ in self.health.forced_states()}
        seen_forced: set[EndpointRef] = set()
        for kv in kvs:
            ref = self._apply(kv.key, kv.value)
            if ref is not None:
                seen_forced.add(ref)
        for ref in forced_before - seen_forced:
            self.health.force(ref, None)  # cleared elsewhere while we were away
        self._fold(before)

    def _apply(self, key: str, value: bytes | None) -> EndpointRef | None:
        """One key's new value (None: deleted). Returns the endpoint when it is a forced state that is set."""
        parts = key[len(self.prefix) + 1 :].split("/")
        kind = parts[0]
        if kind == "instances" and len(parts) == 2:
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
